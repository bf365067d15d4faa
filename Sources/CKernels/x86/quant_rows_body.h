// The row kernels of Q8_0, Q4_0 and Q4_1 against Q8_0/Q8_1 activations in ggml's AVX2 lane arithmetic (per 32-element
// block, 8 int32 lanes of 4 elements each, fma'd into 8 float lanes with d·d_x; Q4_1's minimum terms summed on the
// side), written once and compiled per x86 tier by the file that includes it, which defines:
//   QR_ATTR      the target attribute of the tier;
//   QR_NAME(f)   the tier's name for f (pl_avx512_f, pl_avx2_f);
//   QR_DPBUSD(acc, u8, s8)   acc + the 4-byte dot products of u8 × s8 per int32 lane (vpdpbusd on VNNI; on AVX2
//                vpmaddubsw then vpmaddwd by 1, exact here since no pair sum leaves int16: |a| ≤ 128, |c| ≤ 127).
// The integer lanes are exact, the float steps the same on every tier: the tiers' results are bit-identical.

QR_ATTR static inline float QR_NAME(f16)(const uint8_t *p) { return _cvtsh_ss(load_u16(p)); }

QR_ATTR static inline float QR_NAME(hsum256)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}


// R rows against T quantized inputs at once (a tile): each input block is loaded and its scale converted once for
// all R rows, each weight block loaded (and its nibbles unpacked) once for all T inputs, and R·T independent
// accumulator chains keep the FMA units busy (one row alone is latency-bound). Every output gets exactly the
// operations of a 1×1 tile. Row i is at w + i·row_bytes (neighbours, or rows far apart: row_bytes is then a
// stride), input t at xq + t·xs; with pf > 0 each row's block pf bytes ahead is prefetched (the hardware prefetcher
// alone leaves several streams short of DRAM speed). out[i·T + t].
QR_ATTR static inline __attribute__((always_inline)) void QR_NAME(dotq_tile)(int type, const int R, const int T,
        const uint8_t *w, size_t row_bytes, size_t pf, const uint8_t *xq, size_t xs, int64_t nb, float *out) {
    __m256 acc[4][3];
    float msum[3][4];
    PL_UNROLL
    for (int i = 0; i < R; i++)
        PL_UNROLL
        for (int t = 0; t < T; t++) acc[i][t] = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8);
    const int wbytes = type == PL_TYPE_Q8_0 ? 34 : type == PL_TYPE_Q4_0 ? 18 : 20;
    const int xbytes = type == PL_TYPE_Q4_1 ? 36 : 34, qoff = type == PL_TYPE_Q4_1 ? 4 : 2;
    __m128 msum4[3];
    PL_UNROLL
    for (int t = 0; t < T; t++) msum4[t] = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i c[3], csum[3];
        float dx[3], sx[3];
        PL_UNROLL
        for (int t = 0; t < T; t++) {
            const uint8_t *xb = xq + (size_t)t * xs + b * xbytes;
            c[t] = _mm256_loadu_si256((const __m256i *)(xb + qoff));
            dx[t] = QR_NAME(f16)(xb);
            if (type == PL_TYPE_Q4_1) sx[t] = QR_NAME(f16)(xb + 2);
            // Q4_0: Σ(q−8)·c = Σq·c − 8·Σc; the second term is the input's alone.
            if (type == PL_TYPE_Q4_0) csum[t] = QR_DPBUSD(_mm256_setzero_si256(), eight, c[t]);
        }
        // The R rows' scales (and Q4_1's minimums) converted in one vcvtph2ps, multiplied by each input's in one
        // vmulps: the same single roundings as the scalar dw·dx, one broadcast (vpermps) per row and input.
        uint16_t dr[4] = {0, 0, 0, 0}, mr[4] = {0, 0, 0, 0};
        PL_UNROLL
        for (int i = 0; i < R; i++) {
            dr[i] = load_u16(w + (size_t)i * row_bytes + b * wbytes);
            if (type == PL_TYPE_Q4_1) mr[i] = load_u16(w + (size_t)i * row_bytes + b * wbytes + 2);
        }
        const __m128i dh = _mm_setr_epi16((short)dr[0], (short)dr[1], (short)dr[2], (short)dr[3], 0, 0, 0, 0);
        const __m128i mh = _mm_setr_epi16((short)mr[0], (short)mr[1], (short)mr[2], (short)mr[3], 0, 0, 0, 0);
        const __m128 dw4 = _mm_cvtph_ps(dh);
        __m256 scale[3];
        PL_UNROLL
        for (int t = 0; t < T; t++) {
            scale[t] = _mm256_castps128_ps256(_mm_mul_ps(dw4, _mm_set1_ps(dx[t])));
            // fused, as ggml's FMA build computes m·s + summs (one lane per row)
            if (type == PL_TYPE_Q4_1) msum4[t] = _mm_fmadd_ps(_mm_cvtph_ps(mh), _mm_set1_ps(sx[t]), msum4[t]);
        }
        PL_UNROLL
        for (int i = 0; i < R; i++) {
            const uint8_t *wb = w + (size_t)i * row_bytes + b * wbytes;
            if (pf) _mm_prefetch((const char *)(wb + pf), _MM_HINT_T0);
            __m256i a;
            if (type == PL_TYPE_Q8_0) {
                a = _mm256_loadu_si256((const __m256i *)(wb + 2));
            } else {
                __m128i raw = _mm_loadu_si128((const __m128i *)(wb + qoff));
                a = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low4);
            }
            // Q8_0 × Q8_0: |w| against x with w's sign moved onto it, so the products fit u8·s8.
            const __m256i ua = type == PL_TYPE_Q8_0 ? _mm256_sign_epi8(a, a) : a;
            PL_UNROLL
            for (int t = 0; t < T; t++) {
                __m256i sum = QR_DPBUSD(_mm256_setzero_si256(), ua, type == PL_TYPE_Q8_0 ? _mm256_sign_epi8(c[t], a) : c[t]);
                if (type == PL_TYPE_Q4_0) sum = _mm256_sub_epi32(sum, csum[t]);
                const __m256 sc = _mm256_permutevar8x32_ps(scale[t], _mm256_set1_epi32(i));
                acc[i][t] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(sum), acc[i][t]);
            }
        }
    }
    PL_UNROLL
    for (int t = 0; t < T; t++) _mm_storeu_ps(msum[t], msum4[t]);
    PL_UNROLL
    for (int i = 0; i < R; i++)
        PL_UNROLL
        for (int t = 0; t < T; t++) out[i * T + t] = QR_NAME(hsum256)(acc[i][t]) + msum[t][i];
}

// One call per type, so each inner loop is specialised. Inputs per prefill tile: 1 (tiles of 4 rows × 2 or 3 inputs
// measured no faster on Zen 4 — the f16 scale products and conversions per output, not the loads, bound it).
#define QR_TOKENS 1
#define QR_DOT(R, T, w, stride, pf, x, out)                                                                       \
    switch (type) {                                                                                               \
    case PL_TYPE_Q4_1: QR_NAME(dotq_tile)(PL_TYPE_Q4_1, R, T, w, stride, pf, x, xq_stride, nb, out); break;       \
    case PL_TYPE_Q4_0: QR_NAME(dotq_tile)(PL_TYPE_Q4_0, R, T, w, stride, pf, x, xq_stride, nb, out); break;       \
    default: QR_NAME(dotq_tile)(PL_TYPE_Q8_0, R, T, w, stride, pf, x, xq_stride, nb, out); break;                 \
    }

QR_ATTR void QR_NAME(matmul_q)(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                               int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1) {
    float out[4 * QR_TOKENS];
    int64_t r = r0;
    if (n_tokens == 1) {
        // One input (decode): four rows far apart (the quarters of the range) in lockstep, so the core streams
        // weights from four places at once, each prefetching two of its rows ahead.
        int64_t q = (r1 - r0) / 4;
        for (int64_t i = 0; i < q; i++) {
            QR_DOT(4, 1, w + (size_t)(r0 + i) * row_bytes, (size_t)q * row_bytes, 2 * row_bytes, xq, out)
            PL_UNROLL
            for (int j = 0; j < 4; j++) y[r0 + i + j * q] = out[j];
        }
        r = r0 + 4 * q;
    }
    // Prefill: tiles of four rows (which stay in L1 while every input passes over them) × QR_TOKENS inputs.
    for (; r + 4 <= r1; r += 4) {
        const uint8_t *wr = w + (size_t)r * row_bytes;
        int64_t t = 0;
        for (; t + QR_TOKENS <= n_tokens; t += QR_TOKENS) {
            QR_DOT(4, QR_TOKENS, wr, row_bytes, 0, xq + (size_t)t * xq_stride, out)
            PL_UNROLL
            for (int i = 0; i < 4; i++)
                PL_UNROLL
                for (int u = 0; u < QR_TOKENS; u++) y[(t + u) * ldy + r + i] = out[i * QR_TOKENS + u];
        }
        for (; t < n_tokens; t++) {
            QR_DOT(4, 1, wr, row_bytes, 0, xq + (size_t)t * xq_stride, out)
            PL_UNROLL
            for (int i = 0; i < 4; i++) y[t * ldy + r + i] = out[i];
        }
    }
    for (; r < r1; r++)
        for (int64_t t = 0; t < n_tokens; t++) {
            QR_DOT(1, 1, w + (size_t)r * row_bytes, row_bytes, 0, xq + (size_t)t * xq_stride, out)
            y[t * ldy + r] = out[0];
        }
}
#undef QR_DOT
#undef QR_TOKENS
