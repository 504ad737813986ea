/*
 * glibc-simple-like (glibc's bench-malloc-simple): one thread, tight
 * loops: for each size of 16, 32, ..., 4096 bytes, allocate 100 blocks,
 * write their first and last bytes, and free them in order; then the same
 * with a single block allocated and freed in a loop.
 */
#include "suite.h"

int main(int argc, char **argv) {
    suite_args(argc, argv);
    size_t rounds = scaled(5000);
    uint64_t check = 0;
    unsigned char *b[100];
    for (size_t k = 0; k < rounds; k++)
        for (size_t sz = 16; sz <= 4096; sz *= 2) {
            for (size_t i = 0; i < 100; i++) {
                b[i] = xmalloc(sz);
                b[i][0] = (unsigned char)i;
                b[i][sz - 1] = (unsigned char)(i + sz);
            }
            for (size_t i = 0; i < 100; i++) {
                if (b[i][0] != (unsigned char)i || b[i][sz - 1] != (unsigned char)(i + sz))
                    suite_fail("block contents");
                check += b[i][sz - 1];
                free(b[i]);
            }
            for (size_t i = 0; i < 100; i++) {
                unsigned char *p = xmalloc(sz);
                p[sz / 2] = (unsigned char)i;
                check += p[sz / 2];
                free(p);
            }
        }
    suite_done("glibc-simple", check);
    return 0;
}
