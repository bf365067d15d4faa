import Foundation
import Hummingbird
import NIOCore

/// An error as OpenAI's API reports it: an HTTP status and `{"error": {"message", "type", "param", "code"}}`.
/// Every failure the server answers — bad JSON, bad parameters, a full queue, an unknown route — takes this shape,
/// so OpenAI's client libraries raise their usual exceptions with our message.
public struct APIError: Error, HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let message: String
    /// "invalid_request_error" for the client's mistakes, "server_error" otherwise (OpenAI's names).
    public let type: String
    /// The request field at fault, when there is one.
    public let param: String?
    public let code: String?
    /// Seconds after which the client may retry (sent as Retry-After).
    public let retryAfter: Int?

    public init(_ status: HTTPResponse.Status, _ message: String, type: String = "invalid_request_error",
                param: String? = nil, code: String? = nil, retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retryAfter = retryAfter
    }

    /// A 400 naming the field at fault.
    static func invalid(_ param: String?, _ message: String, code: String? = nil) -> APIError {
        APIError(.badRequest, message, param: param, code: code)
    }

    struct Body: Encodable {
        struct Detail: Encodable {
            let message: String
            let type: String
            let param: String?
            let code: String?

            func encode(to encoder: any Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(message, forKey: .message)
                try c.encode(type, forKey: .type)
                try c.encode(param, forKey: .param)   // explicit nulls, as OpenAI sends them
                try c.encode(code, forKey: .code)
            }

            enum CodingKeys: String, CodingKey { case message, type, param, code }
        }
        let error: Detail
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = Body(error: .init(message: message, type: type, param: param, code: code))
        let data = try JSONEncoder().encode(body)
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Turns every error a route throws into an OpenAI error object: Hummingbird's own (unknown route, body too
/// large) and anything unexpected (a 500 that names it) as well as our `APIError`s.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "the request body is larger than \(context.maxUploadSize) bytes")
        } catch let error as HTTPError {
            let message: String
            switch error.status {
            case .notFound: message = "no route \(request.method) \(request.uri.path)"
            case .contentTooLarge: message = "the request body is larger than \(context.maxUploadSize) bytes"
            default: message = error.body ?? error.status.reasonPhrase
            }
            throw APIError(error.status, message, type: error.status.code < 500 ? "invalid_request_error" : "server_error")
        } catch {
            throw APIError(.internalServerError, "internal error: \(error)", type: "server_error")
        }
    }
}
