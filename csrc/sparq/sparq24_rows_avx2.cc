// AVX2 build of the 2:4 kernel for more than two table rows (sparq24_rows.inc): vpmaddwd of the
// looked-up activation words and the int16 values, added into int32 lanes (signed rows subtract
// their negative part's words first).
#define PQ_S24_MAC(acc, x, v) _mm256_add_epi32(acc, _mm256_madd_epi16(x, v))
#define PQ_S24_COMPUTE sparq24_compute_rows_avx2
#define PQ_S24_COMPUTE_SIGNED sparq24_compute_rows_signed_avx2
#define PQ_S24_COMPUTE_ONE_STREAM sparq24_compute_rows_avx2_one_stream
#define PQ_S24_COMPUTE_SIGNED_ONE_STREAM sparq24_compute_rows_signed_avx2_one_stream
#include "sparq/sparq24_rows.inc"
