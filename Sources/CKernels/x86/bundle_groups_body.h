// Block rows (Q4_0/Q4_1/Q8_0 groups): the down projection of one input from the groups' slices where they lie
// (pl_bundle_down_groups), written once and compiled per x86 tier by the file that includes it, which defines:
//   BG_ATTR      the target attribute of the tier;
//   BG_NAME(f)   the tier's name for f (pl_avx512_f, pl_avx2_f, pl_avxvnni_f);
//   BG_DPBUSD(acc, u8, s8)   as x86/quant_rows_body.h's QR_DPBUSD (the integer lanes are exact on every tier).
// Block b of row r at groups[b / spg] + r·slice_bytes + (b mod spg)·block bytes. Per row, x86/quant_rows_body.h's
// dotq_tile with one input, operation for operation (the exact integer lane sums, the scale f32(d_w)·d_x rounded
// once, fma'd into 8 float lanes in block order; Q4_1's minimums fma'd into a sum of their own; hsum256 + that sum),
// so the bits of pl_matmul_q on the reassembled matrix, on every x86 tier. R neighbouring rows at a time: each
// group's slices are then read as one sequential stream, prefetched 16 rows ahead.
BG_ATTR static inline float BG_NAME(gq_f16)(const uint8_t *p) { return _cvtsh_ss(pl_bundle_ld16(p)); }

BG_ATTR static inline __attribute__((always_inline)) void BG_NAME(gq_rows)(const int type, const int R, const uint8_t *const *groups,
        int64_t spg, size_t row_off, size_t slice_bytes, const uint8_t *xq, int64_t nb, float *out) {
    const int wbytes = type == PL_TYPE_Q8_0 ? 34 : type == PL_TYPE_Q4_0 ? 18 : 20;
    const int xbytes = type == PL_TYPE_Q4_1 ? 36 : 34, qoff = type == PL_TYPE_Q4_1 ? 4 : 2;
    const __m256i low4 = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8);
    __m256 acc[4];
    PL_UNROLL
    for (int i = 0; i < R; i++) acc[i] = _mm256_setzero_ps();
    __m128 msum4 = _mm_setzero_ps();
    const size_t pf = 16 * slice_bytes;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *xb = xq + b * xbytes;
        const __m256i c = _mm256_loadu_si256((const __m256i *)(xb + qoff));
        const float dx = BG_NAME(gq_f16)(xb);
        __m256i csum = _mm256_setzero_si256();
        if (type == PL_TYPE_Q4_0) csum = BG_DPBUSD(_mm256_setzero_si256(), eight, c);
        const uint8_t *w = groups[b / spg] + row_off + (size_t)(b % spg) * wbytes;
        _mm_prefetch((const char *)(w + pf), _MM_HINT_T0);
        if (R > 1 && (size_t)R * slice_bytes > 64) _mm_prefetch((const char *)(w + pf + 64), _MM_HINT_T0);
        uint16_t dr[4] = {0, 0, 0, 0}, mr[4] = {0, 0, 0, 0};
        PL_UNROLL
        for (int i = 0; i < R; i++) {
            dr[i] = pl_bundle_ld16(w + (size_t)i * slice_bytes);
            if (type == PL_TYPE_Q4_1) mr[i] = pl_bundle_ld16(w + (size_t)i * slice_bytes + 2);
        }
        const __m128 dw4 = _mm_cvtph_ps(_mm_setr_epi16((short)dr[0], (short)dr[1], (short)dr[2], (short)dr[3], 0, 0, 0, 0));
        const __m256 scale = _mm256_castps128_ps256(_mm_mul_ps(dw4, _mm_set1_ps(dx)));
        if (type == PL_TYPE_Q4_1) {
            const __m128 m4 = _mm_cvtph_ps(_mm_setr_epi16((short)mr[0], (short)mr[1], (short)mr[2], (short)mr[3], 0, 0, 0, 0));
            msum4 = _mm_fmadd_ps(m4, _mm_set1_ps(BG_NAME(gq_f16)(xb + 2)), msum4);
        }
        PL_UNROLL
        for (int i = 0; i < R; i++) {
            const uint8_t *wb = w + (size_t)i * slice_bytes;
            __m256i a;
            if (type == PL_TYPE_Q8_0) {
                a = _mm256_loadu_si256((const __m256i *)(wb + 2));
            } else {
                const __m128i raw = _mm_loadu_si128((const __m128i *)(wb + qoff));
                a = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low4);
            }
            const __m256i ua = type == PL_TYPE_Q8_0 ? _mm256_sign_epi8(a, a) : a;
            __m256i sum = BG_DPBUSD(_mm256_setzero_si256(), ua, type == PL_TYPE_Q8_0 ? _mm256_sign_epi8(c, a) : c);
            if (type == PL_TYPE_Q4_0) sum = _mm256_sub_epi32(sum, csum);
            const __m256 sc = _mm256_permutevar8x32_ps(scale, _mm256_set1_epi32(i));
            acc[i] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(sum), acc[i]);
        }
    }
    float msum[4];
    _mm_storeu_ps(msum, msum4);
    PL_UNROLL
    for (int i = 0; i < R; i++) out[i] = pl_avx2_hsum8(acc[i]) + msum[i];
}

BG_ATTR static inline __attribute__((always_inline)) void BG_NAME(gq_matmul)(const int type, const uint8_t *const *groups, int64_t spg,
        size_t slice_bytes, const uint8_t *xq, float *y, int64_t nb, int64_t r0, int64_t r1) {
    float out[4];
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        BG_NAME(gq_rows)(type, 4, groups, spg, (size_t)r * slice_bytes, slice_bytes, xq, nb, out);
        PL_UNROLL
        for (int i = 0; i < 4; i++) y[r + i] = out[i];
    }
    for (; r < r1; r++) {
        BG_NAME(gq_rows)(type, 1, groups, spg, (size_t)r * slice_bytes, slice_bytes, xq, nb, out);
        y[r] = out[0];
    }
}

BG_ATTR void BG_NAME(bundle_down_groups)(int type, const uint8_t *const *groups, int64_t spg, size_t slice_bytes,
                                       const uint8_t *xq, float *y, int64_t nb, int64_t r0, int64_t r1) {
    switch (type) {
    case PL_TYPE_Q4_0: BG_NAME(gq_matmul)(PL_TYPE_Q4_0, groups, spg, slice_bytes, xq, y, nb, r0, r1); break;
    case PL_TYPE_Q4_1: BG_NAME(gq_matmul)(PL_TYPE_Q4_1, groups, spg, slice_bytes, xq, y, nb, r0, r1); break;
    default: BG_NAME(gq_matmul)(PL_TYPE_Q8_0, groups, spg, slice_bytes, xq, y, nb, r0, r1); break;
    }
}
