/*
 * forkd-agent: PID 1 and host agent of a forkd guest.
 *
 * Mounts the pseudo filesystems (and, with forkd.root=DEV, an overlay root whose upper layer is
 * tmpfs), then serves length-prefixed JSON frames on the virtio-serial port named "forkd.agent":
 * a 4-byte big-endian length, then a JSON object {"id": N, "op": "...", ...}. Replies carry the
 * same id, so several requests can be in flight (exec runs asynchronously). The agent never
 * exits: a host disconnect (read() == 0, POLLHUP) just parks the port until the host reconnects,
 * which the kernel announces with SIGIO.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <dirent.h>
#include <linux/random.h>
#include <time.h>
#include <unistd.h>

#include "json.h"

#define AGENT_VERSION "1"
#define PORT_NAME "forkd.agent"
#define MAX_FRAME (16u << 20)
#define MAX_JOBS 64
#define DEFAULT_OUTPUT_CAP (1u << 20)
#define MAX_OUTPUT_CAP (4u << 20)
#define MAX_READ_CHUNK (4u << 20)
#define EXIT_DRAIN_MS 100 /* after the process exits, wait this long for its pipes to reach EOF */
#define DISCONNECTED_RECHECK_MS 1000
#define EVAL_SOCKET "/run/forkd/eval.sock"
#define EVAL_NO_SERVER 3 /* exit code of the eval relay when nothing listens on EVAL_SOCKET */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#define LOG(...) log_line(__VA_ARGS__)

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
	int saved = errno;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	dprintf(STDERR_FILENO, "forkd-agent: %s\n", msg);
	errno = saved;
}

static int64_t now_ms(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- jobs: processes started by exec ---- */

typedef struct {
	bool used;
	double id;
	pid_t pid;
	int fd[3]; /* stdin (write end), stdout, stderr (read ends); -1 once closed */
	buf out[2];
	bool truncated[2];
	size_t cap;
	unsigned char *stdin_data;
	size_t stdin_len, stdin_off;
	int64_t started, deadline, exited_at; /* CLOCK_MONOTONIC ms; deadline 0 = none */
	bool exited, timed_out;
	int status;
} job;

static job jobs[MAX_JOBS];
static int port_fd = -1;
static bool host_connected;
static buf inbuf, outbuf;
static size_t skip_bytes; /* body bytes of an oversized frame still to discard */
static sigset_t original_mask;

static void send_frame(const buf *body)
{
	unsigned char hdr[4] = { (unsigned char)(body->len >> 24), (unsigned char)(body->len >> 16),
				 (unsigned char)(body->len >> 8), (unsigned char)body->len };
	if (!host_connected)
		return; /* nobody to read it: the host forgets requests it sent to a closed connection */
	buf_put(&outbuf, hdr, 4);
	buf_put(&outbuf, body->data, body->len);
}

static void reply_start(buf *b, const jval *id)
{
	buf_puts(b, "{\"id\":");
	if (id && id->type == J_NUM)
		buf_printf(b, "%.17g", id->num);
	else
		buf_puts(b, "null");
}

static void reply_ok(const jval *id)
{
	buf b = { 0 };
	reply_start(&b, id);
	buf_puts(&b, ",\"ok\":true}");
	send_frame(&b);
	buf_free(&b);
}

static void reply_error(const jval *id, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void reply_error(const jval *id, const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	buf b = { 0 };
	reply_start(&b, id);
	buf_puts(&b, ",\"ok\":false,\"error\":{\"code\":");
	buf_json_string(&b, code, strlen(code));
	buf_puts(&b, ",\"message\":");
	buf_json_string(&b, msg, strlen(msg));
	buf_puts(&b, "}}");
	send_frame(&b);
	buf_free(&b);
}

static void reply_errno(const jval *id, const char *what, const char *path)
{
	const char *name = strerrorname_np(errno);
	char code[48];
	snprintf(code, sizeof code, "E_%s", name ? name + 1 : "IO"); /* ENOENT -> E_NOENT */
	reply_error(id, code, "%s %s: %s", what, path, strerror(errno));
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void finish_job(job *j)
{
	jval id = { .type = J_NUM, .num = j->id };
	buf b = { 0 };
	int code = WIFEXITED(j->status) ? WEXITSTATUS(j->status) : 128 + WTERMSIG(j->status);
	reply_start(&b, &id);
	buf_printf(&b, ",\"ok\":true,\"exit_code\":%d,\"signal\":", code);
	if (WIFSIGNALED(j->status))
		buf_printf(&b, "%d", WTERMSIG(j->status));
	else
		buf_puts(&b, "null");
	buf_printf(&b, ",\"timed_out\":%s,\"duration_ms\":%lld", j->timed_out ? "true" : "false",
		   (long long)(j->exited_at - j->started));
	static const char *names[2] = { "stdout", "stderr" };
	for (int s = 0; s < 2; s++) {
		buf_printf(&b, ",\"%s\":", names[s]);
		buf_base64(&b, (unsigned char *)j->out[s].data, j->out[s].len);
		buf_printf(&b, ",\"%s_truncated\":%s", names[s], j->truncated[s] ? "true" : "false");
	}
	buf_puts(&b, "}");
	send_frame(&b);
	buf_free(&b);
	for (int f = 0; f < 3; f++)
		close_fd(&j->fd[f]);
	buf_free(&j->out[0]);
	buf_free(&j->out[1]);
	free(j->stdin_data);
	memset(j, 0, sizeof *j);
}

static void read_job_output(job *j, int s)
{
	char tmp[65536];
	ssize_t n = read(j->fd[s + 1], tmp, sizeof tmp);
	if (n <= 0) {
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			close_fd(&j->fd[s + 1]);
		return;
	}
	size_t room = j->cap > j->out[s].len ? j->cap - j->out[s].len : 0;
	if ((size_t)n > room)
		j->truncated[s] = true;
	buf_put(&j->out[s], tmp, (size_t)n < room ? (size_t)n : room);
}

static void write_job_stdin(job *j)
{
	ssize_t n = write(j->fd[0], j->stdin_data + j->stdin_off, j->stdin_len - j->stdin_off);
	if (n > 0)
		j->stdin_off += (size_t)n;
	if ((n < 0 && errno != EAGAIN && errno != EINTR) || j->stdin_off >= j->stdin_len)
		close_fd(&j->fd[0]); /* EOF for the process, or it closed its stdin (EPIPE) */
}

/* Returns argv (NULL-terminated, pointing into req) or NULL. */
static char **exec_argv(const jval *req)
{
	const jval *argv = json_get(req, "argv");
	const char *shell = json_str(req, "shell");
	size_t n = 0;
	if (shell) {
		char **a = calloc(4, sizeof *a);
		a[0] = "/bin/sh";
		a[1] = "-c";
		a[2] = (char *)shell;
		return a;
	}
	if (!argv || argv->type != J_ARR)
		return NULL;
	for (const jval *v = argv->child; v; v = v->next, n++)
		if (v->type != J_STR)
			return NULL;
	if (n == 0)
		return NULL;
	char **a = calloc(n + 1, sizeof *a);
	n = 0;
	for (const jval *v = argv->child; v; v = v->next)
		a[n++] = v->str;
	return a;
}

static char **exec_envp(const jval *req)
{
	const jval *env = json_get(req, "env");
	size_t n = 0;
	for (const jval *v = env && env->type == J_OBJ ? env->child : NULL; v; v = v->next)
		n++;
	char **e = calloc(n + 4, sizeof *e);
	size_t k = 0;
	bool has_path = false, has_home = false;
	for (const jval *v = env && env->type == J_OBJ ? env->child : NULL; v; v = v->next) {
		if (v->type != J_STR)
			continue;
		has_path |= strcmp(v->key, "PATH") == 0;
		has_home |= strcmp(v->key, "HOME") == 0;
		if (asprintf(&e[k], "%s=%s", v->key, v->str) < 0)
			abort();
		k++;
	}
	if (!has_path)
		e[k++] = strdup("PATH=" DEFAULT_PATH);
	if (!has_home)
		e[k++] = strdup("HOME=/root");
	return e;
}

static void free_envp(char **e)
{
	for (size_t i = 0; e[i]; i++)
		free(e[i]);
	free(e);
}

static int write_all(int fd, const char *data, size_t len)
{
	while (len) {
		ssize_t n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * The eval op's process: relays its stdin (the code) to the guest's warm interpreter on
 * EVAL_SOCKET and the interpreter's JSON reply to its stdout. Running it as a job gives eval the
 * timeout, output cap and concurrency of exec without spawning an interpreter.
 */
static int eval_relay(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	strcpy(addr.sun_path, EVAL_SOCKET);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
		dprintf(2, "no eval server listens on %s: %s\n", EVAL_SOCKET, strerror(errno));
		return EVAL_NO_SERVER;
	}
	char tmp[65536];
	ssize_t n;
	while ((n = read(0, tmp, sizeof tmp)) > 0)
		if (write_all(s, tmp, (size_t)n) != 0)
			return 4;
	shutdown(s, SHUT_WR);
	while ((n = read(s, tmp, sizeof tmp)) > 0)
		if (write_all(1, tmp, (size_t)n) != 0)
			return 4;
	return n < 0 ? 4 : 0;
}

/* exec (argv or shell) and eval (the code as stdin, relayed by eval_relay) run as jobs. */
static void op_exec(const jval *req, const jval *id, bool eval)
{
	job *j = NULL;
	for (int i = 0; i < MAX_JOBS && !j; i++)
		if (!jobs[i].used)
			j = &jobs[i];
	if (!j) {
		reply_error(id, "E_BUSY", "%d commands already running", MAX_JOBS);
		return;
	}
	char **argv = eval ? calloc(1, sizeof(char *)) : exec_argv(req);
	if (!argv) {
		reply_error(id, "E_BAD_REQUEST", "exec needs \"argv\" (non-empty array of strings) or \"shell\" (string)");
		return;
	}
	const char *cwd = json_str(req, "cwd");
	struct stat st;
	errno = 0;
	if (cwd && (stat(cwd, &st) != 0 || !S_ISDIR(st.st_mode))) {
		if (errno == 0)
			errno = ENOTDIR;
		reply_errno(id, "cwd", cwd);
		free(argv);
		return;
	}
	const char *stdin_b64 = json_str(req, "stdin");
	const jval *stdin_v = json_get(req, "stdin");
	unsigned char *stdin_data = NULL;
	size_t stdin_len = 0;
	if (stdin_b64 && !base64_decode(stdin_b64, stdin_v->len, &stdin_data, &stdin_len)) {
		reply_error(id, "E_BAD_REQUEST", "\"stdin\" is not valid base64");
		free(argv);
		return;
	}
	double timeout = 0, cap = DEFAULT_OUTPUT_CAP;
	json_num(req, "timeout_ms", &timeout);
	json_num(req, "max_output", &cap);
	if (cap < 0 || cap > MAX_OUTPUT_CAP)
		cap = MAX_OUTPUT_CAP;

	int pipes[3][2];
	for (int p = 0; p < 3; p++) {
		if (pipe2(pipes[p], O_CLOEXEC) != 0) {
			reply_errno(id, "pipe", "for exec");
			while (p-- > 0) {
				close(pipes[p][0]);
				close(pipes[p][1]);
			}
			free(argv);
			free(stdin_data);
			return;
		}
	}
	char **envp = exec_envp(req);
	pid_t pid = fork();
	if (pid == 0) {
		setsid();
		dup2(pipes[0][0], 0);
		dup2(pipes[1][1], 1);
		dup2(pipes[2][1], 2);
		sigprocmask(SIG_SETMASK, &original_mask, NULL);
		if (cwd && chdir(cwd) != 0)
			_exit(126);
		if (eval) {
			/* no exec to close the O_CLOEXEC fds: the relay would hold its own stdin pipe open */
			close_range(3, ~0U, 0);
			_exit(eval_relay());
		}
		environ = envp; /* execvp searches the PATH of this environment */
		execvp(argv[0], argv);
		int err = errno;
		dprintf(2, "forkd-agent: exec %s: %s\n", argv[0], strerror(err));
		_exit(err == ENOENT ? 127 : 126);
	}
	free_envp(envp);
	free(argv);
	close(pipes[0][0]);
	close(pipes[1][1]);
	close(pipes[2][1]);
	memset(j, 0, sizeof *j);
	j->used = true;
	j->id = id && id->type == J_NUM ? id->num : -1;
	j->pid = pid;
	j->cap = (size_t)cap;
	j->started = now_ms(CLOCK_MONOTONIC);
	j->deadline = timeout > 0 ? j->started + (int64_t)timeout : 0;
	for (int p = 0; p < 3; p++) {
		j->fd[p] = pipes[p][p == 0 ? 1 : 0];
		fcntl(j->fd[p], F_SETFL, O_NONBLOCK);
	}
	j->stdin_data = stdin_data;
	j->stdin_len = stdin_len;
	if (pid < 0) {
		j->exited = true;
		j->status = 127 << 8;
		j->exited_at = j->started;
		buf_puts(&j->out[1], "forkd-agent: fork failed\n");
	}
	if (stdin_len == 0)
		close_fd(&j->fd[0]);
}

static void reply_too_large(const jval *id, const char *path, double max_bytes)
{
	reply_error(id, "E_TOO_LARGE", "read %s: longer than max_bytes (%.0f)", path, max_bytes);
}

/* max_bytes (optional) bounds the whole file: a read that would pass it is refused with E_TOO_LARGE */
static void op_read_file(const jval *req, const jval *id)
{
	const char *path = json_str(req, "path");
	double offset = 0, length = MAX_READ_CHUNK, max_bytes = -1;
	json_num(req, "offset", &offset);
	json_num(req, "length", &length);
	json_num(req, "max_bytes", &max_bytes);
	if (!path || offset < 0 || length < 0) {
		reply_error(id, "E_BAD_REQUEST", "read_file needs \"path\" and non-negative offset/length");
		return;
	}
	if (length > MAX_READ_CHUNK)
		length = MAX_READ_CHUNK;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		reply_errno(id, "open", path);
		if (fd >= 0)
			close(fd);
		return;
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		errno = EISDIR;
		reply_errno(id, "read", path);
		return;
	}
	if (max_bytes >= 0) {
		if (offset > max_bytes || (S_ISREG(st.st_mode) && st.st_size > max_bytes)) {
			close(fd);
			reply_too_large(id, path, max_bytes);
			return;
		}
		/* one byte past the limit tells a file that ends there from one that goes on (st_size is 0 for /dev/zero) */
		if (length > max_bytes + 1 - offset)
			length = max_bytes + 1 - offset;
	}
	unsigned char *data = malloc((size_t)length + 1);
	size_t got = 0;
	while (got < (size_t)length) {
		ssize_t n = pread(fd, data + got, (size_t)length - got, (off_t)offset + (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			reply_errno(id, "read", path);
			free(data);
			close(fd);
			return;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (max_bytes >= 0 && offset + (double)got > max_bytes) {
		free(data);
		reply_too_large(id, path, max_bytes);
		return;
	}
	buf b = { 0 };
	reply_start(&b, id);
	buf_printf(&b, ",\"ok\":true,\"size\":%lld,\"mode\":%u,\"eof\":%s,\"data\":", (long long)st.st_size,
		   st.st_mode & 07777, got < (size_t)length ? "true" : "false");
	buf_base64(&b, data, got);
	buf_puts(&b, "}");
	send_frame(&b);
	buf_free(&b);
	free(data);
}

static void op_write_file(const jval *req, const jval *id)
{
	const char *path = json_str(req, "path");
	const char *b64 = json_str(req, "data");
	double mode = 0644;
	json_num(req, "mode", &mode);
	unsigned char *data;
	size_t len;
	if (!path || !b64) {
		reply_error(id, "E_BAD_REQUEST", "write_file needs \"path\" and \"data\" (base64)");
		return;
	}
	if (!base64_decode(b64, json_get(req, "data")->len, &data, &len)) {
		reply_error(id, "E_BAD_REQUEST", "\"data\" is not valid base64");
		return;
	}
	int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (json_bool(req, "append", false) ? O_APPEND : O_TRUNC);
	int fd = open(path, flags, (mode_t)mode);
	size_t done = 0;
	while (fd >= 0 && done < len) {
		ssize_t n = write(fd, data + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		done += (size_t)n;
	}
	if (fd < 0 || done < len || fsync(fd) != 0) {
		reply_errno(id, fd < 0 ? "open" : "write", path);
	} else {
		fchmod(fd, (mode_t)mode);
		buf b = { 0 };
		reply_start(&b, id);
		buf_printf(&b, ",\"ok\":true,\"written\":%zu}", len);
		send_frame(&b);
		buf_free(&b);
	}
	if (fd >= 0)
		close(fd);
	free(data);
}

/* After a restore: the host's wall clock, fresh entropy and this child's identity. */
static void op_restored(const jval *req, const jval *id)
{
	double ms;
	const char *entropy = json_str(req, "entropy");
	const char *hostname = json_str(req, "hostname");
	if (!json_num(req, "time_ms", &ms) || !entropy) {
		reply_error(id, "E_BAD_REQUEST", "restored needs \"time_ms\" and \"entropy\" (base64)");
		return;
	}
	unsigned char *bytes;
	size_t len;
	if (!base64_decode(entropy, json_get(req, "entropy")->len, &bytes, &len) || len == 0 || len > 4096) {
		reply_error(id, "E_BAD_REQUEST", "\"entropy\" must be 1..4096 bytes of base64");
		return;
	}
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)((int64_t)ms % 1000) * 1000000 };
	struct rand_pool_info *pool = malloc(sizeof *pool + len + 4);
	pool->entropy_count = (int)len * 8;
	pool->buf_size = (int)len;
	memcpy(pool->buf, bytes, len);
	free(bytes);
	int rnd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (clock_settime(CLOCK_REALTIME, &ts) != 0)
		reply_errno(id, "clock_settime", "CLOCK_REALTIME");
	else if (rnd < 0 || ioctl(rnd, RNDADDENTROPY, pool) != 0 || ioctl(rnd, RNDRESEEDCRNG) != 0)
		reply_errno(id, "reseed", "/dev/urandom");
	else if (hostname && sethostname(hostname, strlen(hostname)) != 0)
		reply_errno(id, "sethostname", hostname);
	else
		reply_ok(id);
	if (rnd >= 0)
		close(rnd);
	free(pool);
}

static void op_ping(const jval *id)
{
	struct timespec up;
	clock_gettime(CLOCK_BOOTTIME, &up);
	buf b = { 0 };
	reply_start(&b, id);
	buf_printf(&b, ",\"ok\":true,\"pong\":true,\"version\":\"%s\",\"uptime_ms\":%lld,\"jobs\":", AGENT_VERSION,
		   (long long)up.tv_sec * 1000 + up.tv_nsec / 1000000);
	int running = 0;
	for (int i = 0; i < MAX_JOBS; i++)
		running += jobs[i].used;
	buf_printf(&b, "%d}", running);
	send_frame(&b);
	buf_free(&b);
}

static bool shutdown_requested;

static void handle_frame(const char *data, size_t len)
{
	jval *req = json_parse(data, len);
	if (!req || req->type != J_OBJ) {
		reply_error(NULL, "E_BAD_JSON", "frame of %zu bytes is not a JSON object", len);
		json_free(req);
		return;
	}
	const jval *id = json_get(req, "id");
	const char *op = json_str(req, "op");
	if (!id || id->type != J_NUM)
		reply_error(NULL, "E_BAD_REQUEST", "request has no numeric \"id\"");
	else if (!op)
		reply_error(id, "E_BAD_REQUEST", "request has no \"op\"");
	else if (strcmp(op, "ping") == 0)
		op_ping(id);
	else if (strcmp(op, "exec") == 0)
		op_exec(req, id, false);
	else if (strcmp(op, "eval") == 0)
		op_exec(req, id, true);
	else if (strcmp(op, "read_file") == 0)
		op_read_file(req, id);
	else if (strcmp(op, "write_file") == 0)
		op_write_file(req, id);
	else if (strcmp(op, "restored") == 0)
		op_restored(req, id);
	else if (strcmp(op, "shutdown") == 0) {
		reply_ok(id);
		shutdown_requested = true;
	} else
		reply_error(id, "E_UNKNOWN_OP", "unknown op \"%s\"", op);
	json_free(req);
}

static void consume(size_t n)
{
	memmove(inbuf.data, inbuf.data + n, inbuf.len - n);
	inbuf.len -= n;
}

static void parse_frames(void)
{
	for (;;) {
		if (skip_bytes) {
			size_t n = skip_bytes < inbuf.len ? skip_bytes : inbuf.len;
			consume(n);
			skip_bytes -= n;
			if (skip_bytes)
				return;
		}
		if (inbuf.len < 4)
			return;
		const unsigned char *h = (const unsigned char *)inbuf.data;
		size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
		if (len > MAX_FRAME) {
			reply_error(NULL, "E_FRAME_TOO_LARGE", "frame of %zu bytes is over the %u byte limit", len, MAX_FRAME);
			consume(4);
			skip_bytes = len;
			continue;
		}
		if (inbuf.len < 4 + len)
			return;
		handle_frame(inbuf.data + 4, len);
		consume(4 + len);
	}
}

static void set_disconnected(void)
{
	if (host_connected)
		LOG("host disconnected");
	host_connected = false;
	inbuf.len = outbuf.len = 0;
	skip_bytes = 0;
}

static void check_connected(void)
{
	struct pollfd p = { port_fd, POLLIN, 0 };
	if (poll(&p, 1, 0) >= 0 && !(p.revents & POLLHUP) && !host_connected) {
		host_connected = true;
		LOG("host connected");
	}
}

static void flush_output(void)
{
	while (host_connected && outbuf.len) {
		ssize_t n = write(port_fd, outbuf.data, outbuf.len);
		if (n <= 0)
			return; /* EAGAIN: poll for POLLOUT */
		memmove(outbuf.data, outbuf.data + n, outbuf.len - (size_t)n);
		outbuf.len -= (size_t)n;
	}
}

static void service_port(short revents)
{
	/*
	 * revents predates the read: the host may have reconnected since and sent a request. A hang-up
	 * ends the old connection before anything is read, or it would drop that request's reply; the
	 * new connection's data is read once check_connected() sees the host back.
	 */
	if (revents & POLLHUP) {
		set_disconnected();
		return;
	}
	if (revents & POLLIN) {
		char tmp[65536];
		ssize_t n = read(port_fd, tmp, sizeof tmp);
		if (n > 0) {
			buf_put(&inbuf, tmp, (size_t)n);
			parse_frames();
		} else if (n == 0) {
			set_disconnected();
		}
	}
}

static void reap_children(void)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (int i = 0; i < MAX_JOBS; i++) {
			if (jobs[i].used && jobs[i].pid == pid) {
				jobs[i].exited = true;
				jobs[i].status = status;
				jobs[i].exited_at = now_ms(CLOCK_MONOTONIC);
			}
		}
	}
}

/* Kills timed-out jobs, finishes completed ones; returns the poll timeout in ms. */
static int service_jobs(void)
{
	int64_t now = now_ms(CLOCK_MONOTONIC);
	int64_t next = -1;
	for (int i = 0; i < MAX_JOBS; i++) {
		job *j = &jobs[i];
		if (!j->used)
			continue;
		if (!j->exited && j->deadline && now >= j->deadline && !j->timed_out) {
			j->timed_out = true;
			kill(-j->pid, SIGKILL);
		}
		bool drained = j->fd[1] < 0 && j->fd[2] < 0;
		if (j->exited && (drained || now - j->exited_at >= EXIT_DRAIN_MS)) {
			finish_job(j);
			continue;
		}
		int64_t due = j->exited ? j->exited_at + EXIT_DRAIN_MS : j->deadline;
		if (due && !j->timed_out && (next < 0 || due - now < next))
			next = due - now < 0 ? 0 : due - now;
	}
	if (!host_connected && (next < 0 || next > DISCONNECTED_RECHECK_MS))
		next = DISCONNECTED_RECHECK_MS;
	return (int)next;
}

static int open_agent_port(void)
{
	for (int attempt = 0; attempt < 100; attempt++) {
		DIR *d = opendir("/sys/class/virtio-ports");
		struct dirent *e;
		while (d && (e = readdir(d))) {
			char path[300], name[64] = { 0 };
			snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			ssize_t n = read(fd, name, sizeof name - 1);
			close(fd);
			if (n > 0 && strncmp(name, PORT_NAME "\n", sizeof PORT_NAME) == 0) {
				snprintf(path, sizeof path, "/dev/%s", e->d_name);
				closedir(d);
				return open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
			}
		}
		if (d)
			closedir(d);
		usleep(50000);
	}
	errno = ENODEV;
	return -1;
}

static void mount_fs(const char *src, const char *dst, const char *type, unsigned long flags, const char *opts)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, flags, opts) != 0 && errno != EBUSY)
		LOG("mount %s on %s: %m", type, dst);
}

static void mount_pseudo(void)
{
	mount_fs("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_fs("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mount_fs("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	mount_fs("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666");
	mount_fs("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	mount_fs("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	mount_fs("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	static const char *links[][2] = { { "/proc/self/fd", "/dev/fd" },
					   { "/proc/self/fd/0", "/dev/stdin" },
					   { "/proc/self/fd/1", "/dev/stdout" },
					   { "/proc/self/fd/2", "/dev/stderr" } };
	for (size_t i = 0; i < sizeof links / sizeof *links; i++)
		if (symlink(links[i][0], links[i][1]) != 0 && errno != EEXIST)
			LOG("symlink %s: %m", links[i][1]);
}

/* forkd.root=DEV on the kernel command line: DEV read-only under a tmpfs overlay becomes "/". */
static void enter_rootfs(void)
{
	char cmdline[4096] = { 0 }, dev[64] = { 0 };
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, cmdline, sizeof cmdline - 1) < 0)
		cmdline[0] = 0;
	if (fd >= 0)
		close(fd);
	const char *arg = strstr(cmdline, "forkd.root=");
	if (!arg || sscanf(arg, "forkd.root=%63s", dev) != 1)
		return;
	char devpath[80];
	snprintf(devpath, sizeof devpath, "/dev/%s", dev);
	mount_fs(devpath, "/.lower", "ext4", MS_RDONLY, NULL);
	mount_fs("tmpfs", "/.rw", "tmpfs", 0, "mode=0755");
	mkdir("/.rw/upper", 0755);
	mkdir("/.rw/work", 0755);
	mount_fs("overlay", "/.root", "overlay", 0, "lowerdir=/.lower,upperdir=/.rw/upper,workdir=/.rw/work");
	static const char *moved[] = { "/dev", "/proc", "/sys", "/tmp", "/run" };
	for (size_t i = 0; i < sizeof moved / sizeof *moved; i++) {
		char dst[64];
		snprintf(dst, sizeof dst, "/.root%s", moved[i]);
		mkdir(dst, 0755);
		if (mount(moved[i], dst, NULL, MS_MOVE, NULL) != 0)
			LOG("move %s: %m", moved[i]);
	}
	if (chdir("/.root") != 0 || mount(".", "/", NULL, MS_MOVE, NULL) != 0 || chroot(".") != 0 || chdir("/") != 0)
		LOG("switch to %s failed: %m", devpath);
	else
		LOG("root is %s (read-only, tmpfs overlay)", devpath);
}

static int set_ifflags_up(int s, const char *name)
{
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
		return -1;
	ifr.ifr_flags |= IFF_UP;
	return ioctl(s, SIOCSIFFLAGS, &ifr);
}

static int set_ipv4(int s, const char *name, unsigned long req, const char *addr)
{
	struct ifreq ifr = { 0 };
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
	sin->sin_family = AF_INET;
	inet_pton(AF_INET, addr, &sin->sin_addr);
	return ioctl(s, req, &ifr);
}

/* lo up; with a NIC (QEMU user networking), eth0 gets QEMU's fixed guest address and route. */
static void network_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0 || set_ifflags_up(s, "lo") != 0)
		LOG("loopback up: %m");
	if (s >= 0 && access("/sys/class/net/eth0", F_OK) == 0) {
		struct rtentry route = { 0 };
		struct sockaddr_in *gw = (struct sockaddr_in *)&route.rt_gateway;
		((struct sockaddr_in *)&route.rt_dst)->sin_family = AF_INET;
		((struct sockaddr_in *)&route.rt_genmask)->sin_family = AF_INET;
		gw->sin_family = AF_INET;
		inet_pton(AF_INET, "10.0.2.2", &gw->sin_addr);
		route.rt_flags = RTF_UP | RTF_GATEWAY;
		if (set_ipv4(s, "eth0", SIOCSIFADDR, "10.0.2.15") != 0 || set_ipv4(s, "eth0", SIOCSIFNETMASK, "255.255.255.0") != 0 ||
		    set_ifflags_up(s, "eth0") != 0 || ioctl(s, SIOCADDRT, &route) != 0)
			LOG("eth0 up: %m");
	}
	if (s >= 0)
		close(s);
}

int main(void)
{
	sigset_t all;
	sigfillset(&all);
	static const int kernel_signals[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS };
	for (size_t i = 0; i < sizeof kernel_signals / sizeof *kernel_signals; i++)
		sigdelset(&all, kernel_signals[i]);
	sigprocmask(SIG_SETMASK, &all, &original_mask);
	int sfd = signalfd(-1, &all, SFD_CLOEXEC | SFD_NONBLOCK);

	mount_pseudo();
	enter_rootfs();
	network_up();
	if (sethostname("forkd", 5) != 0)
		LOG("sethostname: %m");
	port_fd = open_agent_port();
	if (port_fd < 0) {
		LOG("no virtio-serial port named %s: %m; halting", PORT_NAME);
		sync();
		reboot(RB_AUTOBOOT);
	}
	fcntl(port_fd, F_SETOWN, getpid());
	fcntl(port_fd, F_SETFL, fcntl(port_fd, F_GETFL) | O_ASYNC); /* SIGIO when the host (re)connects */
	check_connected();
	LOG("ready (version %s)", AGENT_VERSION);

	/* From here on nothing may end the loop: PID 1 exiting panics the guest. */
	for (;;) {
		struct pollfd fds[2 + MAX_JOBS * 3];
		job *owner[2 + MAX_JOBS * 3];
		int which[2 + MAX_JOBS * 3];
		nfds_t n = 0;
		int timeout = service_jobs();
		if (shutdown_requested && outbuf.len == 0) {
			LOG("shutdown requested");
			sync();
			reboot(RB_AUTOBOOT); /* QEMU runs with -no-reboot, so this ends the VM */
		}
		fds[n++] = (struct pollfd){ sfd, POLLIN, 0 };
		fds[n++] = (struct pollfd){ host_connected ? port_fd : -1, (short)(POLLIN | (outbuf.len ? POLLOUT : 0)), 0 };
		for (int i = 0; i < MAX_JOBS; i++) {
			for (int f = 0; f < 3 && jobs[i].used; f++) {
				if (jobs[i].fd[f] < 0)
					continue;
				owner[n] = &jobs[i];
				which[n] = f;
				fds[n++] = (struct pollfd){ jobs[i].fd[f], (short)(f == 0 ? POLLOUT : POLLIN), 0 };
			}
		}
		if (poll(fds, n, timeout) < 0)
			continue;
		if (fds[0].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == sizeof si) {
				if (si.ssi_signo == SIGCHLD)
					reap_children();
			}
		}
		for (nfds_t k = 2; k < n; k++) {
			if (!fds[k].revents)
				continue;
			if (which[k] == 0)
				write_job_stdin(owner[k]);
			else
				read_job_output(owner[k], which[k] - 1);
		}
		if (fds[1].revents)
			service_port(fds[1].revents);
		if (!host_connected)
			check_connected();
		service_jobs();
		flush_output();
	}
}
