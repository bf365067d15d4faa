import PocketLM
import ServiceLifecycle

/// Runs a `ParallelGenerator` as a service of the application's service group: it starts with the server and,
/// on graceful shutdown (SIGTERM), finishes the requests it has accepted before it returns. The HTTP server is
/// shut down first (services stop in reverse order), so no request arrives after the generator stops.
struct GeneratorService: Service {
    let generator: ParallelGenerator

    func run() async throws {
        await withGracefulShutdownHandler {
            await generator.run()
        } onGracefulShutdown: {
            generator.shutdown()
        }
    }
}
