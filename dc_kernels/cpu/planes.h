/* Bit-plane streams and codebook lookups, shared by the CPU kernels (layout: dc_kernels/planes.py).
 *
 * A stream of `width`-bit values is stored as planes of 8, 4 and 1 bits, widest (lowest bits)
 * first, each starting at a multiple of 64 bytes after the previous one; plane p holds bits
 * shift_p .. shift_p + width_p of every value: value i at bit i * width_p of byte and bit planes,
 * and in a nibble plane value j of each group of 16 at nibble (j % 2) * 8 + j / 2 of the group's
 * 64-bit word. With AVX-512, 16 values (i a multiple of 16) come out of one widening load per
 * byte plane, a broadcast and a variable shift per nibble plane (32-bit lane j finds its value in
 * its half of the word) and a mask register per bit plane. dc_get16 is always inlined: kernels
 * instantiated for a constant width (DC_FOR_WIDTHS) get the plane loop unrolled. With AVX2 (and
 * FMA) but no AVX-512, dc_get16x8 gives the same 16 values as two vectors of 8 lanes: one 16-byte
 * load per byte plane, one broadcast and two variable shifts per nibble plane, a compare per half
 * per bit plane.
 *
 * Codebook lookups: the codebook is zero-padded to 512 entries (codes of up to 9 bits); codes of
 * up to 4 bits select their weight with one vpermps from a 16-entry register, 5-bit codes with one
 * vpermt2ps from two registers (both read only the low index bits), wider codes with a gather.
 * With AVX2, codes of up to 3 bits take one vpermps from an 8-entry register, 4-bit codes two
 * and a blend on bit 3, 5-bit codes four and three blends (all read only the low index bits; on
 * AMD EPYC (Zen 3) the sparse form of Alex-7 and VGG-6 at batch 8 ran 1.2-1.5x faster than with a
 * gather), wider codes a gather.
 */
#ifndef DC_PLANES_H
#define DC_PLANES_H
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define DC_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__)
#define DC_AVX2 1
#include <immintrin.h>
#endif

#define DC_PLANE_ALIGN 64
#define DC_MAX_PLANES 5 /* widths of up to 16 bits: at most 8 + 4 + 1 + 1 + 1 */
#define DC_TABLE 512    /* the zero-padded codebook: codes of up to 9 bits */
#define DC_INLINE static inline __attribute__((always_inline))
/* X(w) for every stream width the kernels are instantiated for. */
#define DC_FOR_WIDTHS(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16)

typedef struct {
  const uint8_t *base[DC_MAX_PLANES];
  int width[DC_MAX_PLANES], shift[DC_MAX_PLANES];
  int n;
} dc_planes_t;

static inline int64_t dc_plane_align(int64_t bytes) {
  return (bytes + DC_PLANE_ALIGN - 1) / DC_PLANE_ALIGN * DC_PLANE_ALIGN;
}

/* The planes of a `length`-value stream of `width` bits stored at `data` (dc_kernels/planes.py). */
static inline void dc_planes_init(dc_planes_t *p, const uint8_t *data, int64_t length, int width) {
  static const int widths[3] = {8, 4, 1};
  int64_t offset = 0;
  int shift = 0;
  p->n = 0;
  for (int k = 0; k < 3; ++k) {
    const int w = widths[k];
    while (width >= w && p->n < DC_MAX_PLANES) {
      const int i = p->n++;
      p->base[i] = data + offset;
      p->width[i] = w;
      p->shift[i] = shift;
      offset += dc_plane_align(length * w / 8);
      shift += w;
      width -= w;
    }
  }
}

/* Value i of the stream. */
static inline uint32_t dc_get1(const dc_planes_t *p, int64_t i) {
  uint32_t v = 0;
  for (int k = 0; k < p->n; ++k) {
    const int w = p->width[k];
    const int64_t nibble = i / 16 * 16 + (i % 2) * 8 + i % 16 / 2; /* a nibble plane's order */
    const int64_t bit = w == 4 ? nibble * 4 : i * w;
    v |= (uint32_t)((p->base[k][bit >> 3] >> (bit & 7)) & ((1 << w) - 1)) << p->shift[k];
  }
  return v;
}

#ifdef DC_AVX512
/* Values i .. i + 15 of a stream of `width` bits (i a multiple of 16), one per 32-bit lane. With
 * `clean` 0 the lanes of a stream that is one nibble plane may hold more bits above the value. */
DC_INLINE __m512i dc_get16(const dc_planes_t *p, int64_t i, const int width, const int clean) {
  __m512i v = _mm512_setzero_si512();
  int rest = width, shift = 0, k = 0;
  for (; rest >= 8; rest -= 8, shift += 8, ++k) {
    const __m512i t = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p->base[k] + i)));
    v = shift ? _mm512_or_si512(v, _mm512_slli_epi32(t, shift)) : t;
  }
  if (rest >= 4) {
    int64_t word;
    memcpy(&word, p->base[k] + ((uint64_t)i >> 1), sizeof word); /* i >= 0: one shift, not a signed division */
    const __m512i halves = _mm512_set_epi32(28, 28, 24, 24, 20, 20, 16, 16, 12, 12, 8, 8, 4, 4, 0, 0);
    __m512i t = _mm512_srlv_epi32(_mm512_set1_epi64(word), halves);
    if (clean || shift || rest > 4) t = _mm512_and_si512(t, _mm512_set1_epi32(0x0F));
    v = shift ? _mm512_or_si512(v, _mm512_slli_epi32(t, shift)) : t;
    rest -= 4, shift += 4, ++k;
  }
  for (; rest >= 1; rest -= 1, shift += 1, ++k) {
    uint16_t bits;
    memcpy(&bits, p->base[k] + ((uint64_t)i >> 3), sizeof bits);
    v = _mm512_mask_or_epi32(v, (__mmask16)bits, v, _mm512_set1_epi32(1 << shift));
  }
  return v;
}

/* The weights of 16 codes of `bits` bits (the table's first 32 entries held in lo and hi). With 4-
 * and 5-bit codes the lanes may hold more bits above the code: vpermps and vpermt2ps read only
 * the low 4 and 5 index bits. */
DC_INLINE __m512 dc_lookup16(const float *table, int bits, __m512 lo, __m512 hi, __m512i code) {
  if (bits <= 4) return _mm512_permutexvar_ps(code, lo);
  if (bits == 5) return _mm512_permutex2var_ps(lo, code, hi);
  return _mm512_i32gather_ps(code, table, 4);
}
#endif

#ifdef DC_AVX2
/* Values i .. i + 15 of a stream of `width` bits (i a multiple of 16): v[0] holds i .. i + 7, v[1]
 * the rest, one per 32-bit lane. With `clean` 0 the lanes of a stream that is one nibble plane may
 * hold more bits above the value. */
DC_INLINE void dc_get16x8(const dc_planes_t *p, int64_t i, const int width, const int clean, __m256i v[2]) {
  v[0] = v[1] = _mm256_setzero_si256();
  int rest = width, shift = 0, k = 0;
  for (; rest >= 8; rest -= 8, shift += 8, ++k) {
    const __m128i bytes = _mm_loadu_si128((const __m128i *)(p->base[k] + i));
    const __m256i t[2] = {_mm256_cvtepu8_epi32(bytes), _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(bytes, bytes))};
    for (int h = 0; h < 2; ++h) v[h] = shift ? _mm256_or_si256(v[h], _mm256_slli_epi32(t[h], shift)) : t[h];
  }
  if (rest >= 4) {
    int64_t word;
    memcpy(&word, p->base[k] + ((uint64_t)i >> 1), sizeof word); /* i >= 0: one shift, not a signed division */
    /* lane j of half h: value 8 h + j, at nibble (j % 2) * 8 + 4 h + j / 2 of the word */
    const __m256i all = _mm256_set1_epi64x(word);
    __m256i t[2] = {_mm256_srlv_epi32(all, _mm256_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12)),
                    _mm256_srlv_epi32(all, _mm256_setr_epi32(16, 16, 20, 20, 24, 24, 28, 28))};
    for (int h = 0; h < 2; ++h) {
      if (clean || shift || rest > 4) t[h] = _mm256_and_si256(t[h], _mm256_set1_epi32(0x0F));
      v[h] = shift ? _mm256_or_si256(v[h], _mm256_slli_epi32(t[h], shift)) : t[h];
    }
    rest -= 4, shift += 4, ++k;
  }
  for (; rest >= 1; rest -= 1, shift += 1, ++k) {
    uint16_t bits;
    memcpy(&bits, p->base[k] + ((uint64_t)i >> 3), sizeof bits);
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (int h = 0; h < 2; ++h) {
      const __m256i set = _mm256_and_si256(_mm256_set1_epi32((bits >> (8 * h)) & 0xFF), lane_bit);
      const __m256i mask = _mm256_cmpeq_epi32(set, lane_bit);
      v[h] = _mm256_or_si256(v[h], _mm256_and_si256(mask, _mm256_set1_epi32(1 << shift)));
    }
  }
}

/* The weights of 8 codes of `bits` bits (the table's first 16 entries held in lo and hi). With
 * codes of 3 to 5 bits the lanes may hold more bits above the code: vpermps reads only the low 3
 * index bits, and each blend one bit (moved to the sign). */
DC_INLINE __m256 dc_lookup8(const float *table, int bits, __m256 lo, __m256 hi, __m256i code) {
  if (bits > 5) return _mm256_i32gather_ps(table, code, 4);
  if (bits <= 3) return _mm256_permutevar8x32_ps(lo, code);
  const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(code, 28));
  const __m256 low = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, code), _mm256_permutevar8x32_ps(hi, code), bit3);
  if (bits == 4) return low;
  /* 5 bits: entries 16 .. 31 read from the table as the permutes' operands, bit 4 picks */
  const __m256 high = _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 16), code),
                                       _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 24), code), bit3);
  return _mm256_blendv_ps(low, high, _mm256_castsi256_ps(_mm256_slli_epi32(code, 27)));
}

/* 4-, 5- and 6-bit codes (a nibble plane, and a bit plane for each bit above 4) by byte lookups:
 * vpshufb looks 32 codes up in a 16-byte table, so the four bytes of the codebook's first 16
 * entries (dc_table_bytes, each table in both 128-bit halves) give 32 weights in 4 lookups and 8
 * unpacks, where dc_lookup8 spends 4 vpermps, 2 blends and their shifts on 16 (on AMD EPYC Zen 3,
 * a 4-row GEMV loop ran 1.6-1.7x faster this way); 5-bit codes look up entries 16 .. 31 as well
 * and pick by bit 4, a byte mask made from the bit plane's 32 bits in 4 instructions; 6-bit codes
 * look up all four sixteens and pick by bits 4 and 5 (dc_lookup8 gathers for them). The weights
 * come out in nibble order: vector m, lane e holds value 16 (m / 2) + dc_nibble_order[8 (m % 2) +
 * e] of the 32 (the unpacks interleave within 128-bit halves), so a kernel multiplies them with
 * x's columns in that order (dc_nibble_order_rows). */
#define DC_NIBBLE_STEP 32
#define DC_NIBBLE_TABLES 4 /* sixteens of the codebook a lookup may pick from: codes of up to 6 bits */
static const int dc_nibble_order[16] = {0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15};

/* bytes[4 s + b] (b < 4, s < sixteens <= DC_NIBBLE_TABLES): byte b of entries 16 s .. 16 s + 15 of
 * the table (zero-padded: planes.h). */
static inline void dc_table_bytes(const float *table, __m256i *bytes, int sixteens) {
  uint8_t t[4 * DC_NIBBLE_TABLES][32];
  for (int k = 0; k < 16 * sixteens; ++k) {
    uint32_t u;
    memcpy(&u, table + k, sizeof u);
    for (int b = 0; b < 4; ++b) t[4 * (k / 16) + b][k % 16] = t[4 * (k / 16) + b][k % 16 + 16] = (uint8_t)(u >> (8 * b));
  }
  for (int b = 0; b < 4 * sixteens; ++b) bytes[b] = _mm256_loadu_si256((const __m256i *)t[b]);
}

/* Byte q of half h of the lookups holds value DC_NIBBLE_VALUE(h, q) of the 32: the low (h = 0) or
 * high (h = 1) nibble of the nibble plane's byte q (planes.py: value j of a group of 16 at nibble
 * (j % 2) * 8 + j / 2 of its word). */
#define DC_NIBBLE_VALUE(h, q) (16 * ((q) / 8) + ((q) % 8 < 4 ? 4 * ((q) % 8) + 2 * (h) : 4 * ((q) % 8) - 15 + 2 * (h)))

/* Byte q of half h: all ones where bit DC_NIBBLE_VALUE(h, q) of the bit plane's 32 bits at value
 * i (a multiple of 16) is set. */
DC_INLINE __m256i dc_nibble_bit_mask(const uint8_t *plane, int64_t i) {
#define DC_BIT_BYTE(h, q) (char)(DC_NIBBLE_VALUE(h, q) / 8)
#define DC_BIT(h, q) (char)(1 << (DC_NIBBLE_VALUE(h, q) % 8))
#define DC_HALF(X, h)                                                                                         \
  X(h, 0), X(h, 1), X(h, 2), X(h, 3), X(h, 4), X(h, 5), X(h, 6), X(h, 7), X(h, 8), X(h, 9), X(h, 10), X(h, 11), \
      X(h, 12), X(h, 13), X(h, 14), X(h, 15)
  const __m256i which = _mm256_setr_epi8(DC_HALF(DC_BIT_BYTE, 0), DC_HALF(DC_BIT_BYTE, 1));
  const __m256i bit = _mm256_setr_epi8(DC_HALF(DC_BIT, 0), DC_HALF(DC_BIT, 1));
#undef DC_BIT_BYTE
#undef DC_BIT
#undef DC_HALF
  int32_t word;
  memcpy(&word, plane + ((uint64_t)i >> 3), sizeof word);
  const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(word), which);
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

/* The weights of values i .. i + 31 of a stream of `width` (4, 5 or 6) bits (i a multiple of 16),
 * in nibble order. */
DC_INLINE void dc_lookup32_nibbles(const dc_planes_t *p, int64_t i, const __m256i bytes[4 * DC_NIBBLE_TABLES],
                                   const int width, __m256 w[4]) {
  /* low half: the low nibbles of the 16 bytes, high half: the high ones */
  const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p->base[0] + ((uint64_t)i >> 1))));
  const __m256i code = _mm256_and_si256(_mm256_blend_epi32(v, _mm256_srli_epi16(v, 4), 0xF0), _mm256_set1_epi8(0x0F));
  __m256i b[4];
  for (int k = 0; k < 4; ++k) b[k] = _mm256_shuffle_epi8(bytes[k], code);
  if (width >= 5) {
    const __m256i bit4 = dc_nibble_bit_mask(p->base[1], i);
    for (int k = 0; k < 4; ++k) b[k] = _mm256_blendv_epi8(b[k], _mm256_shuffle_epi8(bytes[4 + k], code), bit4);
    if (width == 6) {
      const __m256i bit5 = dc_nibble_bit_mask(p->base[2], i);
      for (int k = 0; k < 4; ++k) {
        const __m256i high = _mm256_blendv_epi8(_mm256_shuffle_epi8(bytes[8 + k], code),
                                                _mm256_shuffle_epi8(bytes[12 + k], code), bit4);
        b[k] = _mm256_blendv_epi8(b[k], high, bit5);
      }
    }
  }
  const __m256i lo01 = _mm256_unpacklo_epi8(b[0], b[1]), hi01 = _mm256_unpackhi_epi8(b[0], b[1]);
  const __m256i lo23 = _mm256_unpacklo_epi8(b[2], b[3]), hi23 = _mm256_unpackhi_epi8(b[2], b[3]);
  w[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(lo01, lo23));
  w[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(lo01, lo23));
  w[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(hi01, hi23));
  w[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(hi01, hi23));
}

/* Columns 16 g + 8 h .. 16 g + 8 h + 7 of x in nibble order, from the group's halves lo (columns
 * 16 g .. 16 g + 7) and hi: lanes 0, 1, 4, 5 from lo, 2, 3, 6, 7 from hi, one permute for both
 * (the even columns for h = 0, the odd ones for h = 1). */
DC_INLINE __m256 dc_nibble_order8(__m256 lo, __m256 hi, int h) {
  const __m256i lanes = h ? _mm256_setr_epi32(1, 5, 1, 5, 3, 7, 3, 7) : _mm256_setr_epi32(0, 4, 0, 4, 2, 6, 2, 6);
  return _mm256_blend_ps(_mm256_permutevar8x32_ps(lo, lanes), _mm256_permutevar8x32_ps(hi, lanes), 0xCC);
}

/* rows x cols of x (leading dimension ldx) into out (leading dimension ldo, a multiple of
 * DC_NIBBLE_STEP), each group of 16 columns in nibble order, zeros from column cols to ldo. */
static inline void dc_nibble_order_rows(const float *x, int64_t rows, int64_t cols, int64_t ldx, float *out,
                                        int64_t ldo) {
  for (int64_t r = 0; r < rows; ++r) {
    const float *in = x + r * ldx;
    float *o = out + r * ldo;
    int64_t k = 0;
    for (; k + 16 <= cols; k += 16) {
      const __m256 lo = _mm256_loadu_ps(in + k), hi = _mm256_loadu_ps(in + k + 8);
      for (int h = 0; h < 2; ++h) _mm256_storeu_ps(o + k + 8 * h, dc_nibble_order8(lo, hi, h));
    }
    for (; k < ldo; ++k) {
      const int64_t c = k / 16 * 16 + dc_nibble_order[k % 16];
      o[k] = c < cols ? in[c] : 0.f;
    }
  }
}
#endif

static inline void dc_table_fill(float *table, const float *codebook, int64_t k) {
  memset(table, 0, DC_TABLE * sizeof(float));
  memcpy(table, codebook, (size_t)k * sizeof(float));
}

#endif
