import CKernels
import CPlatform
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reading groups: at load (pinned groups, or whole layers to reassemble) and per step (into window slots or staging).
extension PagedFeedForward {
    /// Reads each layer whole (into a staging buffer, or a temporary one in resident mode) and reassembles it.
    func loadDense() throws {
        guard let reader else { return }
        let temporary = staging.isEmpty
            ? UnsafeMutableRawPointer.allocate(byteCount: layout.layerBytes, alignment: FlashLayout.ioAlignment) : nil
        defer { temporary?.deallocate() }
        let buffer = temporary ?? staging[0]
        for l in 0..<config.numHiddenLayers {
            let batch = batches[0]
            batch.reset()
            batch.add(offset: bundleOffsets[l], length: layout.layerBytes, into: buffer, maxRead: layout.layerBytes)
            reader.submit(batch)
            try batch.wait()
            denseLayers.append(DenseFFNLayer(layout: layout, block: l, bundles: UnsafeRawPointer(buffer),
                                             downScales: l < downScales.count ? UnsafePointer(downScales[l]) : nil))
        }
        // The reassembled down matrices hold the columns format's scales now.
        for p in downScales { p.deallocate() }
        downScales = []
    }

    /// Fills the pinned slots: the groups with the most calibration mass when the file has it, else the first.
    func loadPinned() throws {
        guard let reader, caches.first.map({ $0.pinned > 0 }) == true else { return }
        let G = layout.groupsPerLayer, bb = layout.bundleBytes
        for (l, cache) in caches.enumerated() {
            var order = Array(0..<G)
            if l < groupMass.count { order.sort { groupMass[l][$0] > groupMass[l][$1] } }
            let chosen = order.prefix(cache.pinned).sorted()
            let batch = batches[0]
            batch.reset()
            for (slot, grp) in chosen.enumerated() {
                cache.pin(group: grp, slot: slot)
                batch.add(offset: bundleOffsets[l] + grp * bb, length: layout.groupReadBytes(l), into: cache.pointer(slot: slot),
                          maxRead: 1 << 20)
            }
            reader.submit(batch)
            try batch.wait()
        }
    }


    /// Finds, for block `block`, the groups the rows need that are not in memory, assigns each a home (an empty lent
    /// slot, a window slot or the staging buffer) and queues its read.
    func issue(block: Int, buffer: Int, rows: Int) {
        let G = layout.groupsPerLayer, bb = layout.bundleBytes
        let cache = caches[block], batch = batches[buffer], length = layout.groupReadBytes(block)
        batch.reset()
        let read = readThisStep + buffer * G
        // Staging holds the groups in the order they are read (at most `plan.stagingGroups`: those not pinned), so
        // a run of adjacent groups lands in adjacent buffers as before.
        var staged = 0
        for gi in 0..<G {
            read[gi] = false
            var want = false
            for r in 0..<rows where needed[r * G + gi] { want = true; break }
            if let s = cache.slot(of: gi) {
                cache.touch(slot: s, token: token)
                location[buffer][gi] = UnsafeRawPointer(cache.pointer(slot: s))
                if want {
                    stats.groupsNeeded += 1; stats.groupsInMemory += 1
                    if s >= cache.capacity { stats.groupsInLentSlots += 1 }
                }
                continue
            }
            location[buffer][gi] = nil
            guard want else { continue }
            stats.groupsNeeded += 1
            let dest: UnsafeMutableRawPointer
            if let s = cache.admitLent(group: gi) {
                dest = cache.pointer(slot: s)
            } else if options.mode == .flash, options.window > 0, let s = cache.admit(group: gi, token: token) {
                dest = cache.pointer(slot: s)
            } else {
                precondition(staged < plan.stagingGroups, "staging overflow: more groups missing than the plan holds")
                dest = staging[buffer] + staged * bb
                staged += 1
            }
            location[buffer][gi] = UnsafeRawPointer(dest)
            read[gi] = true
            batch.add(offset: bundleOffsets[block] + gi * bb, length: length, into: dest, maxRead: PagedFeedForward.maxRead)
        }
        stats.bytesRead += batch.bytes
        stats.reads += batch.count
        pending[buffer] = block
        if asyncReads.isEmpty {
            reader!.submit(batch)
        } else {
            do {
                try asyncReads[buffer].submit(batch)
            } catch {
                submitFailure[buffer] = error
            }
        }
    }


    /// Blocks until the reads queued for `buffer` are in; throws the first failure.
    func waitReads(buffer: Int) throws(PagingError) {
        if let e = submitFailure[buffer] {
            submitFailure[buffer] = nil
            throw e
        }
        if asyncReads.isEmpty { try batches[buffer].wait() } else { try asyncReads[buffer].wait() }
    }

    /// After a failed read: the groups meant for window slots must not be used later.
    func invalidate(buffer: Int) {
        pending[buffer] = nil
        lastBlock = -1
        for cache in caches {
            for s in cache.evictableSlots {
                if let gi = cache.group(inSlot: s), readThisStep[buffer * layout.groupsPerLayer + gi] { cache.evict(slot: s) }
            }
        }
    }
}
