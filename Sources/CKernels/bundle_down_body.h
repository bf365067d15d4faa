// The down projection of the flash-paging bundles (pl_bundle_down_q8_0) in ggml's lane arithmetic, written once for
// the tiers that work on 8 rows at a time (x86/avx2_bundles.c, arm/neon_bundles.c). Rows go in tiles of BD_TILE;
// per block b (in order) and lane l (neurons 32b+4l .. +3) with a listed neuron, S_l of every row of the tile is
// Σ_j column_j[r]·h_j (unlisted neurons × 0: exact integers) and is fma'd into the row's lane-l chain with
// d_down[r][b]·d_h[b]. A lane with no listed neuron has S_l = 0 for every row and fma(d, 0, acc) = acc, so it is
// skipped. Rows past the last whole 8 go through a zeroed copy of their columns. Then hsum_float_8 + 0.0f per row,
// as the dense kernel adds its (Q4_1) minimum term. The including file defines:
//   BD_ATTR      the target attribute of the tier;
//   BD_FUNC      the name of the function;
//   bd_scale(d_down as f16 bits, d_h)          → f32(d_down)·d_h;
//   bd_lane8(fa, sc, p, h, r)                  fa[i] = fma(sc[i], Σ_j p[j][r+i]·h[j], fa[i]) for i < 8;
//   bd_reduce8(facc, i, o)                     o[k] = hsum_float_8 of rows i+k's 8 lane chains + 0.0f, k < 8.
#define BD_TILE 128

BD_ATTR void BD_FUNC(const void *const *bundles, const int32_t *ids, int64_t n, const uint8_t *hq,
                     const uint16_t *down_scale, int64_t dim, int64_t ffn, int32_t *acc, float *out,
                     int64_t r0, int64_t r1) {
    const int64_t nb = ffn / 32;
    const size_t col_off = (size_t)(dim / 32) * 34 * 2;
    int32_t stack_map[PL_BUNDLE_MAP_CHUNK];
    int64_t chunk, built = -1;
    int32_t *map = pl_bundle_map_home(acc, stack_map, ffn, r0, r1, &chunk);
    float facc[8][BD_TILE] __attribute__((aligned(32)));
    float sc[BD_TILE] __attribute__((aligned(32)));
    int8_t tail[4][8];
    const int8_t *tp[4] = {tail[0], tail[1], tail[2], tail[3]};
    for (int64_t t0 = r0; t0 < r1; t0 += BD_TILE) {
        const int64_t tr = r1 - t0 < BD_TILE ? r1 - t0 : BD_TILE, whole = tr / 8 * 8, padded = (tr + 7) / 8 * 8;
        for (int l = 0; l < 8; l++) for (int64_t i = 0; i < padded; i++) facc[l][i] = 0.0f;
        for (int64_t z = tr; z < padded; z++) sc[z] = 0.0f;
        for (int64_t c0 = 0; c0 < ffn; c0 += chunk) {
            const int64_t c1 = c0 + chunk < ffn ? c0 + chunk : ffn;
            if (built != c0) { pl_bundle_build_map(map, c0, c1, ids, n); built = c0; }
            for (int64_t b = c0 / 32; b < c1 / 32; b++) {
                const int32_t *mb = map + (b * 32 - c0);
                const uint32_t listed = pl_bundle_listed(mb);
                if (!listed) continue;
                const uint8_t *hb = hq + b * 34;
                const float dh = pl_f16_to_f32(pl_bundle_ld16(hb));
                for (int64_t i = 0; i < tr; i++) sc[i] = bd_scale(down_scale[(t0 + i) * nb + b], dh);
                for (int l = 0; l < 8; l++) {
                    const unsigned nib = (listed >> (4 * l)) & 15u;
                    if (!nib) continue;
                    const int8_t *p[4];
                    int8_t h[4];
                    pl_bundle_lane(bundles, mb + 4 * l, nib, col_off, hb, l, p, h);
                    int64_t i = 0;
                    for (; i < whole; i += 8) bd_lane8(facc[l] + i, sc + i, p, h, t0 + i);
                    if (i < tr) {
                        memset(tail, 0, sizeof tail);
                        for (int j = 0; j < 4; j++) memcpy(tail[j], p[j] + t0 + i, (size_t)(tr - i));
                        bd_lane8(facc[l] + i, sc + i, tp, h, 0);
                    }
                }
            }
        }
        for (int64_t i = 0; i < padded; i += 8) {
            float o[8];
            bd_reduce8(facc, i, o);
            memcpy(out + (t0 - r0) + i, o, (size_t)(tr - i < 8 ? tr - i : 8) * 4);
        }
    }
}
#undef BD_TILE
