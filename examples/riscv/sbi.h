/*
 * The few SBI calls the kernel makes: console output, hart state
 * management (HSM), system reset, and probing for them.
 */
#ifndef SBI_H
#define SBI_H

#include <stdbool.h>
#include <stddef.h>

#define SBI_EXT_BASE 0x10
#define SBI_EXT_HSM 0x48534d
#define SBI_EXT_SRST 0x53525354
#define SBI_EXT_DBCN 0x4442434e
#define SBI_EXT_IPI 0x735049
#define SBI_LEGACY_PUTCHAR 0x01
#define SBI_LEGACY_SHUTDOWN 0x08

#define SBI_ERR_ALREADY_AVAILABLE (-6)
#define SBI_HSM_STARTED 0
#define SBI_HSM_STOPPED 1

struct sbiret {
    long error;
    long value;
};

struct sbiret sbi_call(long ext, long fid, long a0, long a1, long a2);

/* Find what the firmware offers; must run before the other calls. */
void sbi_init(void);
/* Describe the firmware in one line ("SBI 1.0, OpenSBI 1.1, ..."). */
void sbi_describe(char *buf, size_t size);

void sbi_console_write(const char *s, size_t n);
long sbi_hart_start(unsigned long hartid, unsigned long start, unsigned long opaque);
long sbi_hart_status(unsigned long hartid);
bool sbi_has_hsm(void);
/* Raise a supervisor software interrupt on every hart. */
void sbi_send_ipi_all(void);
/* Shut the machine down; returns only if the firmware cannot. */
void sbi_shutdown(bool failure);

#endif
