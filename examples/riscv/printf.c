/*
 * The tiny printf (see printf.h). Messages longer than the 320-byte buffer
 * are cut short, never overrun.
 */
#include "printf.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct out {
    char *buf;
    size_t size, len; /* len counts every character, written or not */
};

static void put(struct out *o, char c) {
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void put_padded(struct out *o, const char *s, size_t n, int width, bool left, char pad) {
    int fill = width > (int)n ? width - (int)n : 0;
    if (!left && pad == '0' && n > 0 && *s == '-') { /* the sign goes before the zeros */
        put(o, '-');
        s++;
        n--;
    }
    if (!left)
        while (fill-- > 0)
            put(o, pad);
    while (n--)
        put(o, *s++);
    if (left)
        while (fill-- > 0)
            put(o, ' ');
}

static size_t utoa(char *end, unsigned long long v, unsigned base, bool upper) {
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    size_t n = 0;
    do {
        *--end = digits[v % base];
        v /= base;
        n++;
    } while (v);
    return n;
}

int kvsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
    struct out o = {buf, size, 0};
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(&o, *fmt);
            continue;
        }
        bool left = false;
        char pad = ' ';
        int width = 0, lng = 0;
        for (;; fmt++) {
            if (fmt[1] == '-')
                left = true;
            else if (fmt[1] == '0')
                pad = '0';
            else
                break;
        }
        if (fmt[1] == '*') {
            width = va_arg(ap, int);
            fmt++;
        }
        while (fmt[1] >= '0' && fmt[1] <= '9')
            width = width * 10 + (*++fmt - '0');
        while (fmt[1] == 'l' || fmt[1] == 'z') {
            lng++;
            fmt++;
        }
        char num[24], *end = num + sizeof num;
        const char *s;
        size_t n;
        switch (*++fmt) {
        case 'd':
        case 'i': {
            long long v = lng ? va_arg(ap, long) : va_arg(ap, int);
            unsigned long long mag = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
            n = utoa(end, mag, 10, false);
            if (v < 0) {
                end[-(long)n - 1] = '-';
                n++;
            }
            put_padded(&o, end - n, n, width, left, pad);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            unsigned long long v = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
            n = utoa(end, v, *fmt == 'u' ? 10 : 16, *fmt == 'X');
            put_padded(&o, end - n, n, width, left, pad);
            break;
        }
        case 'p': {
            n = utoa(end, (uintptr_t)va_arg(ap, void *), 16, false);
            put(&o, '0');
            put(&o, 'x');
            put_padded(&o, end - n, n, width > 2 ? width - 2 : 0, left, pad);
            break;
        }
        case 's':
            s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            for (n = 0; s[n]; n++)
                ;
            put_padded(&o, s, n, width, left, ' ');
            break;
        case 'c':
            num[0] = (char)va_arg(ap, int);
            put_padded(&o, num, 1, width, left, ' ');
            break;
        case '%':
            put(&o, '%');
            break;
        case '\0':
            fmt--;
            break;
        default:
            put(&o, '%');
            put(&o, *fmt);
            break;
        }
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return (int)o.len;
}

int ksnprintf(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = kvsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

static _Atomic unsigned int console_lock;

static bool lock_console(unsigned long patience) {
    for (unsigned long i = 0; atomic_exchange_explicit(&console_lock, 1u, memory_order_acquire);)
        if (patience && ++i > patience)
            return false;
    return true;
}

static void unlock_console(void) { atomic_store_explicit(&console_lock, 0u, memory_order_release); }

static size_t length(const char *s) {
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static void write_message(const char *fmt, va_list ap, unsigned long patience) {
    char buf[320];
    int n = kvsnprintf(buf, sizeof buf, fmt, ap);
    size_t len = n < (int)sizeof buf ? (size_t)n : sizeof buf - 1;
    bool locked = lock_console(patience);
    plat_write(buf, len);
    if (locked)
        unlock_console();
}

void kvprintf(const char *fmt, va_list ap) { write_message(fmt, ap, 0); }

void kprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    write_message(fmt, ap, 0);
    va_end(ap);
}

void kprintf_force(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    write_message(fmt, ap, 10000000ul);
    va_end(ap);
}

void kputs(const char *s) {
    lock_console(0);
    plat_write(s, length(s));
    unlock_console();
}
