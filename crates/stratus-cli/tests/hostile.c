/*
 * A hostile custom runtime, built as a static binary by tests/isolation.rs:
 * it speaks the Lambda Runtime API itself and, for every event, tries to
 * reach past its sandbox, reporting each attempt as "allowed" or
 * "refused: <reason>". The event {"bomb":"fork"} forks until something stops
 * it; {"bomb":"memory"} allocates until something stops it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static char out[16384];
static size_t out_len;

static void report(const char *key, long rc, int err) {
    out_len += snprintf(out + out_len, sizeof out - out_len, ",\"%s\":\"%s%s\"", key,
                        rc < 0 ? "refused: " : "allowed", rc < 0 ? strerror(err) : "");
}

#define TRY(key, expr)                \
    do {                              \
        errno = 0;                    \
        long rc_ = (long)(expr);      \
        report(key, rc_, errno);      \
    } while (0)

static const char *env_or(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return v ? v : fallback;
}

/* Connects to 127.0.0.1:port; -1 with errno on failure. */
static int connect_local(int port) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    close(fd);
    return 0;
}

/* Reads a file; refused (ENODATA) when it reads as empty, as a masked one does. */
static long read_file(const char *path) {
    char buf[256];
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf);
    int err = errno;
    close(fd);
    if (n <= 0) {
        errno = n == 0 ? ENODATA : err;
        return -1;
    }
    return n;
}

static void attacks(void) {
    char path[4096];
    const char *data_dir = env_or("DATA_DIR", "/nonexistent");
    TRY("shadow", open("/etc/shadow", O_RDONLY));
    TRY("data_dir", open(data_dir, O_RDONLY | O_DIRECTORY));
    snprintf(path, sizeof path, "%s/admin.token", data_dir);
    TRY("token", open(path, O_RDONLY));
    TRY("other_code", open(env_or("OTHER_CODE", "/nonexistent"), O_RDONLY | O_DIRECTORY));
    TRY("home", open("/home", O_RDONLY | O_DIRECTORY));
    TRY("write_task", open("/var/task/x", O_WRONLY | O_CREAT, 0644));
    TRY("write_usr", open("/usr/x", O_WRONLY | O_CREAT, 0644));
    TRY("write_etc", open("/etc/passwd", O_WRONLY | O_APPEND));
    TRY("kill_server", kill(atoi(env_or("SERVER_PID", "0")) ?: 999999, SIGKILL));
    TRY("admin", connect_local(atoi(env_or("ADMIN_PORT", "1"))));
    mkdir("/tmp/m", 0755);
    TRY("mount", mount("none", "/tmp/m", "tmpfs", 0, NULL));
    TRY("setuid", setuid(0));
    TRY("unshare", unshare(CLONE_NEWUSER));
    TRY("ptrace", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
    TRY("module", syscall(SYS_finit_module, 0, "", 0));
    TRY("kexec", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    TRY("bpf", syscall(SYS_bpf, 0, NULL, 0));
    TRY("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0));
    TRY("chroot", chroot("/tmp"));
    TRY("mknod", mknod("/tmp/mem", S_IFCHR | 0600, makedev(1, 1)));
    TRY("raw_socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    TRY("io_uring", syscall(__NR_io_uring_setup, 8, calloc(1, 256)));
    TRY("netlink_diag", socket(AF_NETLINK, SOCK_RAW, 4 /* NETLINK_SOCK_DIAG */));
    TRY("netlink_audit", socket(AF_NETLINK, SOCK_RAW, 9 /* NETLINK_AUDIT */));
    TRY("packet_socket", socket(17 /* AF_PACKET */, SOCK_RAW, 0));
    TRY("vsock", socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
    TRY("kallsyms", read_file("/proc/kallsyms"));
    TRY("kcore", read_file("/proc/kcore"));
}

/* Forks until refused, then kills what it made (each by pid: without
 * namespaces this runs on the host, where kill(-1) would reach everything). */
static pid_t children[100000];

static void fork_bomb(void) {
    int made = 0, err = 0;
    while (made < (int)(sizeof children / sizeof children[0])) {
        pid_t pid = fork();
        if (pid == 0) {
            pause();
            _exit(0);
        }
        if (pid < 0) {
            err = errno;
            break;
        }
        children[made++] = pid;
    }
    for (int i = 0; i < made; i++) kill(children[i], SIGKILL);
    while (wait(NULL) > 0) {
    }
    out_len += snprintf(out + out_len, sizeof out - out_len, ",\"fork_bomb\":\"stopped after %d: %s\"",
                        made, err ? strerror(err) : "not stopped");
}

static void memory_bomb(void) {
    for (;;) {
        char *p = malloc(1 << 20);
        if (!p) break;
        memset(p, 1, 1 << 20);
    }
}

static int connect_api(void) {
    const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
    char host[256];
    const char *colon = api ? strrchr(api, ':') : NULL;
    if (!colon || (size_t)(colon - api) >= sizeof host) return -1;
    memcpy(host, api, colon - api);
    host[colon - api] = 0;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
    inet_pton(AF_INET, host, &addr.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) return -1;
    return fd;
}

/* One request on its own connection; the answer's head and body in buf. */
static ssize_t request(const char *head, const char *body, char *buf, size_t cap) {
    int fd = connect_api();
    if (fd < 0) return -1;
    dprintf(fd, "%sContent-Length: %zu\r\nConnection: close\r\n\r\n%s", head, strlen(body), body);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0) n += r;
    buf[n] = 0;
    close(fd);
    return n;
}

int main(void) {
    static char buf[1 << 16], head[512], id[128];
    for (;;) {
        if (request("GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: api\r\n", "", buf,
                    sizeof buf) <= 0)
            return 1;
        const char *h = strcasestr(buf, "lambda-runtime-aws-request-id:");
        if (!h) return 1;
        h += strlen("lambda-runtime-aws-request-id:");
        while (*h == ' ') h++;
        size_t i = 0;
        while (h[i] && h[i] != '\r' && i + 1 < sizeof id) id[i] = h[i], i++;
        id[i] = 0;
        const char *body = strstr(buf, "\r\n\r\n");
        body = body ? body + 4 : "";

        out_len = 0;
        out_len += snprintf(out, sizeof out, "{\"uid\":%d,\"pid\":%d", (int)getuid(), (int)getpid());
        if (strstr(body, "\"fork\"")) {
            fork_bomb();
        } else if (strstr(body, "\"memory\"")) {
            memory_bomb();
        } else {
            attacks();
        }
        out_len += snprintf(out + out_len, sizeof out - out_len, "}");
        snprintf(head, sizeof head,
                 "POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: api\r\n", id);
        request(head, out, buf, sizeof buf);
    }
}
