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
            packPinnedRows(layer: l, cache: cache)
        }
    }

    /// Block rows: repacks the pinned groups' gate and up rows of layer `l` in place into the packed kernel's 16-row
    /// layout where the ordinary file's store would pack those types on this tier (the same bytes: per 16 rows and
    /// block, quants then scales). Pinned groups stay for the whole run, so their rows then take the packed kernel,
    /// as the ordinary file's do (~4x the row kernel's speed for one input on AVX2, Xeon); read groups keep the
    /// file's rows. The same bits either way.
    func packPinnedRows(layer l: Int, cache: NeuronBundleCache) {
        guard layout.format == .blockRows, cache.pinned > 0, layout.groupNeurons % 16 == 0 else { return }
        let types = layout.types(l), dim = layout.hiddenSize
        for t in [types.gate, types.up] {
            guard MappedWeightStore.packs(type: t),
                  pl_packed_bytes(Int32(t.rawValue), Int64(layout.groupNeurons), Int64(dim)) == layout.groupNeurons * (t.rowBytes(columns: dim) ?? 0)
            else { return }
        }
        let rows = layout.groupNeurons, groups16 = Int64(rows / 16)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: rows * max(layout.gateRowBytes(l), layout.upRowBytes(l)), alignment: 64)
        defer { scratch.deallocate() }
        for slot in 0..<cache.pinned {
            let base = cache.pointer(slot: slot)
            for (type, offset, rowBytes) in [(types.gate, 0, layout.gateRowBytes(l)), (types.up, layout.upOffset(l), layout.upRowBytes(l))] {
                pl_pack_rows(Int32(type.rawValue), base + offset, rowBytes, Int64(rows), Int64(dim), scratch, 0, groups16)
                (base + offset).copyMemory(from: scratch, byteCount: rows * rowBytes)
            }
        }
        pinnedRowsPacked[l] = true
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
