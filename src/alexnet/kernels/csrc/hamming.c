/* Hamming top-R over packed binary codes: the coarse pass of the binary-code index
 * (alexnet/features/index.py). Plain C, no torch headers: built in about a second.
 *
 * For each query: the Hamming distance to every code (XOR and popcount of 64-bit words),
 * a histogram of those distances, the cut distance t where the histogram reaches r, and
 * then, in one pass in id order, every id nearer than t and the first ids at exactly t.
 * So the set is the r smallest by (distance, id): the same set the numpy version picks.
 * An excluded id (exclude[i] >= 0) gets the largest distance. Queries run in parallel.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int hamming_topk(const uint64_t *q, const uint64_t *c, int64_t nq, int64_t n, int64_t words, int64_t r,
                 const int64_t *exclude, int64_t *out, int nthreads) {
    const int64_t top = 64 * words + 1; /* the distance an excluded id gets: beyond every real one */
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        uint16_t *dist = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)n);
        int64_t *hist = (int64_t *)malloc(sizeof(int64_t) * (size_t)(top + 1));
        if (dist == NULL || hist == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < nq; i++) {
            if (dist == NULL || hist == NULL) continue;
            const uint64_t *qi = q + i * words;
            memset(hist, 0, sizeof(int64_t) * (size_t)(top + 1));
            for (int64_t j = 0; j < n; j++) {
                const uint64_t *cj = c + j * words;
                int d = 0;
                for (int64_t w = 0; w < words; w++) d += __builtin_popcountll(qi[w] ^ cj[w]);
                dist[j] = (uint16_t)d;
                hist[d]++;
            }
            if (exclude != NULL && exclude[i] >= 0 && exclude[i] < n) {
                hist[dist[exclude[i]]]--;
                dist[exclude[i]] = (uint16_t)top;
                hist[top]++;
            }
            int64_t t = 0, below = 0; /* below: how many are nearer than t */
            while (below + hist[t] < r) below += hist[t++];
            int64_t ties = r - below, k = 0;
            int64_t *o = out + i * r;
            for (int64_t j = 0; j < n && k < r; j++) {
                if (dist[j] < t) o[k++] = j;
                else if (dist[j] == t && ties > 0) { o[k++] = j; ties--; }
            }
        }
        free(dist);
        free(hist);
    }
    return failed;
}
