/*
 * LD_PRELOAD shim for Debian's linux.uml on hosts with a large XSAVE area (AVX-512, AMX).
 *
 * UML saves and restores its processes' extended FPU state with PTRACE_GETREGSET and
 * PTRACE_SETREGSET on NT_X86_XSTATE, passing a buffer sized for its own idea of the XSAVE
 * area. The host kernel refuses a SETREGSET of any size but its full one (EFAULT), and the
 * guest panics at the first exec of init ("ptrace set fp regs failed, errno = 14").
 *
 * This wrapper of glibc's ptrace() keeps one full-size image per UML buffer address: GET
 * reads the full image and copies UML's prefix out; SET copies UML's prefix over the image
 * and passes the full size. Every other request passes straight through. The full size is
 * probed once with a GETREGSET into a large buffer (the kernel clamps the length it reports).
 *
 * Built by kproxy-guest at test time: gcc -O2 -shared -fPIC -o shim.so ptrace_xstate.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif

#define PROBE_SIZE (1 << 20)
#define MAX_IMAGES 64

typedef long (*ptrace_fn)(enum __ptrace_request, pid_t, void *, void *);

struct image {
    void *uml_buf; /* UML's buffer address: the key */
    unsigned char *full; /* full-size image */
    int filled; /* read from a tracee at least once */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static ptrace_fn real_ptrace;
static size_t full_size; /* 0: not probed yet; (size_t)-1: probing failed */
static struct image images[MAX_IMAGES];

static ptrace_fn real(void)
{
    if (!real_ptrace)
        real_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    return real_ptrace;
}

/* Called with the lock held. */
static size_t probe(pid_t pid)
{
    if (full_size == 0) {
        void *buf = malloc(PROBE_SIZE);
        struct iovec iov = { buf, PROBE_SIZE };
        if (buf && real()(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &iov) == 0)
            full_size = iov.iov_len;
        free(buf);
        /* a failed probe is retried on the next call (the tracee may not be stopped yet) */
    }
    return full_size;
}

/* Called with the lock held. */
static struct image *image_for(void *uml_buf, size_t size)
{
    for (int i = 0; i < MAX_IMAGES; i++)
        if (images[i].uml_buf == uml_buf)
            return &images[i];
    for (int i = 0; i < MAX_IMAGES; i++)
        if (images[i].uml_buf == NULL) {
            images[i].full = calloc(1, size);
            if (!images[i].full)
                return NULL;
            images[i].uml_buf = uml_buf;
            images[i].filled = 0;
            return &images[i];
        }
    return NULL;
}

static long xstate(enum __ptrace_request req, pid_t pid, struct iovec *uml)
{
    long ret;
    pthread_mutex_lock(&lock);
    size_t size = probe(pid);
    struct image *img = size ? image_for(uml->iov_base, size) : NULL;
    if (!img || uml->iov_len >= size) {
        pthread_mutex_unlock(&lock);
        return real()(req, pid, (void *)NT_X86_XSTATE, uml);
    }
    struct iovec iov = { img->full, size };
    if (req == PTRACE_GETREGSET) {
        ret = real()(req, pid, (void *)NT_X86_XSTATE, &iov);
        if (ret == 0) {
            size_t n = iov.iov_len < uml->iov_len ? iov.iov_len : uml->iov_len;
            memcpy(uml->iov_base, img->full, n);
            uml->iov_len = n;
            img->filled = 1;
        }
    } else {
        if (!img->filled) {
            /* no image yet: start from the tracee's own state */
            if (real()(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &iov) == 0)
                img->filled = 1;
            iov.iov_len = size;
        }
        memcpy(img->full, uml->iov_base, uml->iov_len);
        ret = real()(req, pid, (void *)NT_X86_XSTATE, &iov);
    }
    int saved = errno;
    pthread_mutex_unlock(&lock);
    errno = saved;
    return ret;
}

long ptrace(enum __ptrace_request req, ...)
{
    va_list ap;
    va_start(ap, req);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);
    if ((req == PTRACE_GETREGSET || req == PTRACE_SETREGSET) &&
        (unsigned long)addr == NT_X86_XSTATE && data != NULL)
        return xstate(req, pid, (struct iovec *)data);
    return real()(req, pid, addr, data);
}
