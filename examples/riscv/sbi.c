/*
 * SBI calls (RISC-V Supervisor Binary Interface, v0.2+ calling convention:
 * extension in a7, function in a6, error/value back in a0/a1).
 *
 * Console: the Debug Console extension (SBI 2.0) when the firmware has it,
 * else the legacy console_putchar, which every OpenSBI still offers.
 * Debian's OpenSBI 1.1 has only the legacy call; it turns '\n' into "\r\n"
 * itself, so with DBCN the kernel does the same.
 */
#include "sbi.h"

#include "printf.h"

static bool have_dbcn, have_hsm, have_srst;

struct sbiret sbi_call(long ext, long fid, long a0, long a1, long a2) {
    register long r0 __asm__("a0") = a0;
    register long r1 __asm__("a1") = a1;
    register long r2 __asm__("a2") = a2;
    register long r6 __asm__("a6") = fid;
    register long r7 __asm__("a7") = ext;
    __asm__ __volatile__("ecall" : "+r"(r0), "+r"(r1) : "r"(r2), "r"(r6), "r"(r7) : "memory");
    return (struct sbiret){r0, r1};
}

static long legacy_call(long ext, long a0) {
    register long r0 __asm__("a0") = a0;
    register long r7 __asm__("a7") = ext;
    __asm__ __volatile__("ecall" : "+r"(r0) : "r"(r7) : "memory", "a1");
    return r0;
}

static bool probe(long ext) {
    struct sbiret r = sbi_call(SBI_EXT_BASE, 3, ext, 0, 0);
    return r.error == 0 && r.value != 0;
}

void sbi_init(void) {
    have_dbcn = probe(SBI_EXT_DBCN);
    have_hsm = probe(SBI_EXT_HSM);
    have_srst = probe(SBI_EXT_SRST);
}

bool sbi_has_hsm(void) { return have_hsm; }

void sbi_describe(char *buf, size_t size) {
    long spec = sbi_call(SBI_EXT_BASE, 0, 0, 0, 0).value;
    long impl = sbi_call(SBI_EXT_BASE, 1, 0, 0, 0).value;
    long ver = sbi_call(SBI_EXT_BASE, 2, 0, 0, 0).value;
    const char *name = impl == 1 ? "OpenSBI" : impl == 4 ? "RustSBI" : "SBI implementation";
    /* OpenSBI encodes its version as major << 16 | minor. */
    ksnprintf(buf, size, "SBI %ld.%ld, %s %ld.%ld; console %s, HSM %s, SRST %s",
              (spec >> 24) & 0x7f, spec & 0xffffff, name, ver >> 16, ver & 0xffff,
              have_dbcn ? "DBCN" : "legacy putchar", have_hsm ? "yes" : "no",
              have_srst ? "yes" : "no");
}

void sbi_console_write(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (have_dbcn) {
            if (s[i] == '\n')
                (void)sbi_call(SBI_EXT_DBCN, 2, '\r', 0, 0);
            (void)sbi_call(SBI_EXT_DBCN, 2, (unsigned char)s[i], 0, 0);
        } else {
            (void)legacy_call(SBI_LEGACY_PUTCHAR, (unsigned char)s[i]);
        }
    }
}

long sbi_hart_start(unsigned long hartid, unsigned long start, unsigned long opaque) {
    return sbi_call(SBI_EXT_HSM, 0, (long)hartid, (long)start, (long)opaque).error;
}

long sbi_hart_status(unsigned long hartid) {
    struct sbiret r = sbi_call(SBI_EXT_HSM, 2, (long)hartid, 0, 0);
    return r.error ? r.error : r.value;
}

void sbi_send_ipi_all(void) {
    /* hart_mask_base = -1: every hart, the mask ignored (SBI 0.2+). */
    (void)sbi_call(SBI_EXT_IPI, 0, 0, -1, 0);
}

void sbi_shutdown(bool failure) {
    if (have_srst) /* type 0: shutdown; reason 1: system failure */
        (void)sbi_call(SBI_EXT_SRST, 0, 0, failure ? 1 : 0, 0);
    (void)legacy_call(SBI_LEGACY_SHUTDOWN, 0);
}
