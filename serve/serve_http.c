/* serve_http: the libmicrohttpd side of the server.
 *
 * MHD runs one thread per connection, so a handler may block: a non-streamed
 * request waits for its job in the handler, a streamed one waits inside the
 * response's content reader. Both wait in short slices and peek at the socket
 * in between, so a client that hangs up (curl --max-time, a closed tab, the
 * page's stop button) cancels its job within about 100 ms even while nothing
 * is being written; a failed write ends the response and cancels it too. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve_internal.h"

#define WAIT_SLICE_NS 100000000L /* 100 ms */
/* How long a refused body is still read (and dropped) after its 413, so the client sees the answer
 * rather than a reset of a connection closed with its bytes unread. */
#define LINGER_MS 2000
/* How long a stopping server waits for the answers of the requests it ended to be sent. */
#define SHUTDOWN_DRAIN_MS 1000
/* A stream silent this long (queued, or a long prompt) gets an SSE comment, so proxies and clients
 * with read timeouts keep it open. */
#define KEEPALIVE_SLICES 150 /* 15 s */

enum route { ROUTE_NONE, ROUTE_PAGE, ROUTE_HEALTH, ROUTE_MODELS, ROUTE_MODEL, ROUTE_CHAT, ROUTE_COMPLETIONS };

typedef struct req_ctx {
    enum route route;
    mp_sbuf body;
} req_ctx;

typedef struct stream_ctx {
    mp_server *s;
    mp_job *j;
    int fd;
    mp_sbuf out;
    size_t out_pos;
    size_t sent_reasoning, sent_content;
    bool role_sent, finished;
} stream_ctx;

void mp_serve_opts_default(mp_serve_opts *o)
{
    *o = (mp_serve_opts){.host = "127.0.0.1",
                         .port = 8080,
                         .model_name = "moepack",
                         .max_tokens = 2048,
                         .ctx = 4096,
                         .slots = 2,
                         .queue = 16,
                         .max_body = 1u << 20,
                         .timeout_s = 60,
                         .max_connections = 64,
                         .prefill_chunk = MP_SERVE_PREFILL_CHUNK};
}

/* ---- sockets ------------------------------------------------------------------------------- */

static int connection_fd(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? (int)ci->connect_fd : -1;
}

/* True when the peer closed its side (or the socket failed). Bytes of a
 * pipelined next request only show that the client is still there. */
static bool client_gone(int fd)
{
    if (fd < 0)
        return false;
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0)
        return true;
    return r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

/* Waits on the job's condition for one slice (lock held). */
static void wait_slice(mp_server *s, mp_job *j)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += WAIT_SLICE_NS;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&j->cond, &s->mu, &ts);
}

/* ---- plain responses ----------------------------------------------------------------------- */

static enum MHD_Result send_body(struct MHD_Connection *conn, unsigned status, const char *ctype, const char *body,
                                 size_t len, const char *extra_name, const char *extra_value)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (extra_name)
        MHD_add_response_header(r, extra_name, extra_value);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, char *json)
{
    if (!json)
        return MHD_NO;
    enum MHD_Result ret = send_body(conn, status, "application/json", json, strlen(json), NULL, NULL);
    free(json);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, const mp_api_error *e, const char *hname,
                                  const char *hvalue)
{
    char *json = mp_api_error_json(e);
    if (!json)
        return MHD_NO;
    enum MHD_Result ret = send_body(conn, (unsigned)e->status, "application/json", json, strlen(json), hname, hvalue);
    free(json);
    return ret;
}

static enum MHD_Result send_simple_error(struct MHD_Connection *conn, int status, const char *type, const char *code,
                                         const char *message, const char *hname, const char *hvalue)
{
    mp_api_error e;
    mp_api_error_set(&e, status, type, code, NULL, "%s", message);
    return send_error(conn, &e, hname, hvalue);
}

/* Writes all of buf to a socket that may be non-blocking; false when it fails or stalls for 1 s. */
static bool write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, 1000) <= 0)
                return false;
        } else {
            return false;
        }
    }
    return true;
}

/* Ends our side, then reads and drops what the client still sends until it closes, for at most
 * LINGER_MS. */
static void linger_close(int fd)
{
    shutdown(fd, SHUT_WR);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char buf[16384];
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = LINGER_MS - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return;
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return;
    }
}

/* A body (chunked: its size was not declared) that passes --max-body while it is being read.
 * libmicrohttpd 0.9.75 takes no response until the body has ended (MHD_queue_response refuses one
 * in that state), and a client may never end it; returning MHD_NO stops the reading but closes the
 * connection without a word. So the 413 is written here by hand, then the connection closes. */
static enum MHD_Result refuse_body_midway(struct MHD_Connection *conn)
{
    int fd = connection_fd(conn);
    mp_api_error e;
    mp_api_error_set(&e, 413, "invalid_request_error", "request_too_large", NULL,
                     "the request body is larger than the server's limit");
    char *json = mp_api_error_json(&e);
    mp_sbuf out = {0};
    if (fd >= 0 && json &&
        mp_sbuf_printf(&out,
                       "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Type: application/json\r\n"
                       "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nContent-Length: %zu\r\n\r\n%s",
                       strlen(json), json) &&
        write_all(fd, out.p, out.n))
        linger_close(fd);
    free(json);
    mp_sbuf_free(&out);
    return MHD_NO; /* libmicrohttpd closes the connection */
}

static enum MHD_Result send_page(struct MHD_Connection *conn)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(mp_serve_page_html), (void *)mp_serve_page_html, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    /* Everything the page needs is inline; it may talk to this server only. */
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
                            "frame-ancestors 'none'");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* The error of a job that did not finish (lock held). One still queued when the server stopped is
 * told to come back, as a request refused at the door while stopping is (503); others are a 500. */
static void job_error(const mp_job *j, mp_api_error *e)
{
    if (j->shut_out)
        mp_api_error_set(e, 503, "server_error", "server_busy", NULL, "%s", j->error);
    else
        mp_api_error_set(e, 500, "server_error", NULL, NULL, "%s",
                         j->failed ? j->error : "the generation was cancelled");
}

/* ---- streaming ----------------------------------------------------------------------------- */

/* Appends SSE events for what the job produced since the last call (lock held). */
static bool stream_collect(stream_ctx *c)
{
    mp_job *j = c->j;
    mp_server *s = c->s;
    bool chat = j->kind == MP_REQ_CHAT, ok = true;
    if (!c->role_sent && chat) {
        ok = mp_api_chunk(&c->out, s, j, true, NULL, 0, NULL, 0, NULL);
        c->role_sent = true;
    }
    if (ok && j->reasoning.n > c->sent_reasoning) {
        ok = mp_api_chunk(&c->out, s, j, false, j->reasoning.p + c->sent_reasoning, j->reasoning.n - c->sent_reasoning,
                          NULL, 0, NULL);
        c->sent_reasoning = j->reasoning.n;
    }
    if (ok && j->content.n > c->sent_content) {
        ok = mp_api_chunk(&c->out, s, j, false, NULL, 0, j->content.p + c->sent_content, j->content.n - c->sent_content,
                          NULL);
        c->sent_content = j->content.n;
    }
    if (ok && j->done) {
        c->finished = true;
        if (j->failed || !j->finish_reason) {
            mp_api_error e;
            job_error(j, &e);
            char *json = mp_api_error_json(&e);
            ok =
                json && mp_sbuf_addz(&c->out, "data: ") && mp_sbuf_addz(&c->out, json) && mp_sbuf_addz(&c->out, "\n\n");
            free(json);
        } else {
            ok = mp_api_chunk(&c->out, s, j, false, NULL, 0, NULL, 0, j->finish_reason) &&
                 (!j->include_usage || mp_api_usage_chunk(&c->out, s, j));
        }
        ok = ok && mp_sbuf_addz(&c->out, "data: [DONE]\n\n");
    }
    return ok;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream_ctx *c = cls;
    mp_server *s = c->s;
    mp_job *j = c->j;
    while (c->out_pos == c->out.n) {
        if (c->finished)
            return MHD_CONTENT_READER_END_OF_STREAM;
        c->out.n = c->out_pos = 0;
        pthread_mutex_lock(&s->mu);
        /* The first event (the role) goes out at once; later ones when there is news. */
        int slices = 0;
        bool keepalive = false;
        while ((c->role_sent || j->kind != MP_REQ_CHAT) && !j->done && j->reasoning.n == c->sent_reasoning &&
               j->content.n == c->sent_content) {
            wait_slice(s, j);
            if (client_gone(c->fd)) {
                pthread_mutex_unlock(&s->mu);
                mp_job_cancel(s, j);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            if (++slices == KEEPALIVE_SLICES) {
                keepalive = true;
                break;
            }
        }
        bool ok = keepalive ? mp_sbuf_addz(&c->out, ": keep-alive\n\n") : stream_collect(c);
        pthread_mutex_unlock(&s->mu);
        if (!ok) {
            mp_job_cancel(s, j);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = c->out.n - c->out_pos;
    if (n > max)
        n = max;
    memcpy(buf, c->out.p + c->out_pos, n);
    c->out_pos += n;
    return (ssize_t)n;
}

/* The response is gone: finished, or the connection failed. */
static void stream_free(void *cls)
{
    stream_ctx *c = cls;
    mp_job_cancel(c->s, c->j); /* nothing when the job is done */
    mp_job_release(c->s, c->j);
    mp_sbuf_free(&c->out);
    free(c);
}

static enum MHD_Result start_stream(mp_server *s, struct MHD_Connection *conn, mp_job *j)
{
    stream_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        mp_job_cancel(s, j);
        mp_job_release(s, j);
        return MHD_NO;
    }
    c->s = s;
    c->j = j;
    c->fd = connection_fd(conn);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, c, stream_free);
    if (!r) {
        stream_free(c);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r); /* the connection holds it; stream_free runs when it lets go */
    return ret;
}

/* ---- generation requests ------------------------------------------------------------------- */

static enum MHD_Result handle_generate(mp_server *s, struct MHD_Connection *conn, req_ctx *rc)
{
    mp_api_error e;
    mp_serve_req req;
    mp_req_kind kind = rc->route == ROUTE_CHAT ? MP_REQ_CHAT : MP_REQ_COMPLETION;
    if (!mp_api_parse(kind, rc->body.p ? rc->body.p : "", rc->body.n, &req, &e))
        return send_error(conn, &e, NULL, NULL);
    mp_job *j = mp_job_new(s, &req, &e);
    bool stream = req.stream;
    mp_api_req_free(&req);
    if (!j)
        return send_error(conn, &e, NULL, NULL);
    if (!mp_sched_submit(s, j, &e)) {
        mp_job_release(s, j);
        return send_error(conn, &e, "Retry-After", "1");
    }
    if (stream)
        return start_stream(s, conn, j);

    int fd = connection_fd(conn);
    pthread_mutex_lock(&s->mu);
    while (!j->done) {
        wait_slice(s, j);
        if (!j->done && client_gone(fd)) {
            pthread_mutex_unlock(&s->mu);
            mp_job_cancel(s, j);
            mp_job_release(s, j);
            return MHD_NO; /* closes the connection */
        }
    }
    bool ended = !j->failed && j->finish_reason;
    char *json = ended ? mp_api_response_json(s, j) : NULL;
    if (!ended)
        job_error(j, &e);
    pthread_mutex_unlock(&s->mu);
    mp_job_release(s, j);
    if (!ended)
        return send_error(conn, &e, e.status == 503 ? "Retry-After" : NULL, "1");
    return send_json(conn, MHD_HTTP_OK, json);
}

/* ---- routing ------------------------------------------------------------------------------- */

#define MODEL_PREFIX "/v1/models/"

static enum route find_route(const char *url, bool *post)
{
    static const struct {
        const char *path;
        enum route route;
        bool post;
    } table[] = {
        {"/", ROUTE_PAGE, false},
        {"/index.html", ROUTE_PAGE, false},
        {"/health", ROUTE_HEALTH, false},
        {"/v1/models", ROUTE_MODELS, false},
        {"/v1/chat/completions", ROUTE_CHAT, true},
        {"/v1/completions", ROUTE_COMPLETIONS, true},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(url, table[i].path)) {
            *post = table[i].post;
            return table[i].route;
        }
    /* OpenAI's retrieve-model; the id may hold '/' (libmicrohttpd has decoded %2F) */
    if (!strncmp(url, MODEL_PREFIX, strlen(MODEL_PREFIX)) && url[strlen(MODEL_PREFIX)]) {
        *post = false;
        return ROUTE_MODEL;
    }
    return ROUTE_NONE;
}

static enum MHD_Result send_model(mp_server *s, struct MHD_Connection *conn, const char *url)
{
    const char *id = url + strlen(MODEL_PREFIX);
    if (!strcmp(id, s->model_name))
        return send_json(conn, MHD_HTTP_OK, mp_api_model_json(s));
    mp_api_error e;
    mp_api_error_set(&e, 404, "invalid_request_error", "model_not_found", "model",
                     "the model '%.200s' does not exist (this server serves '%.200s')", id, s->model_name);
    return send_error(conn, &e, NULL, NULL);
}

/* Compares the whole key whatever the first difference, so timing tells nothing. */
static bool same_secret(const char *a, size_t la, const char *b)
{
    size_t lb = strlen(b);
    unsigned char diff = la != lb;
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)b[i % (lb ? lb : 1)];
    return diff == 0;
}

static bool authorized(const mp_server *s, struct MHD_Connection *conn)
{
    if (!s->api_key)
        return true;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7))
        return false;
    h += 7;
    /* RFC 9110: whitespace around a field value is not part of it (MHD strips only the leading) */
    while (*h == ' ' || *h == '\t')
        h++;
    size_t len = strlen(h);
    while (len && (h[len - 1] == ' ' || h[len - 1] == '\t'))
        len--;
    return same_secret(h, len, s->api_key);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    mp_server *s = cls;
    req_ctx *rc = *con_cls;
    if (!rc) { /* headers are in, no body read yet */
        bool post = false;
        enum route route = find_route(url, &post);
        bool is_get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
        bool is_post = !strcmp(method, MHD_HTTP_METHOD_POST);
        if (route == ROUTE_NONE)
            return send_simple_error(conn, 404, "invalid_request_error", "not_found", "no such endpoint", NULL, NULL);
        if (post ? !is_post : !is_get)
            return send_simple_error(conn, 405, "invalid_request_error", "method_not_allowed",
                                     post ? "this endpoint takes POST" : "this endpoint takes GET", "Allow",
                                     post ? "POST" : "GET, HEAD");
        if ((route == ROUTE_MODELS || route == ROUTE_MODEL || post) && !authorized(s, conn))
            return send_simple_error(conn, 401, "invalid_request_error", "invalid_api_key",
                                     "missing or wrong API key (send 'Authorization: Bearer KEY')",
                                     MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        /* A declared body over the cap is refused before any of it is read. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->o.max_body)
            return send_simple_error(conn, 413, "invalid_request_error", "request_too_large",
                                     "the request body is larger than the server's limit", NULL, NULL);
        rc = calloc(1, sizeof *rc);
        if (!rc)
            return MHD_NO;
        rc->route = route;
        *con_cls = rc;
        pthread_mutex_lock(&s->mu);
        s->n_open_requests++;
        pthread_mutex_unlock(&s->mu);
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (rc->body.n + *upload_data_size > s->o.max_body)
            return refuse_body_midway(conn);
        if (!mp_sbuf_add(&rc->body, upload_data, *upload_data_size))
            return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* Answering only now, after the (empty) body was read, keeps the connection alive: a response
     * queued on the first call makes libmicrohttpd close it. */
    switch (rc->route) {
    case ROUTE_PAGE: return send_page(conn);
    case ROUTE_HEALTH: return send_json(conn, MHD_HTTP_OK, mp_api_health_json(s));
    case ROUTE_MODELS: return send_json(conn, MHD_HTTP_OK, mp_api_models_json(s));
    case ROUTE_MODEL: return send_model(s, conn, url);
    default: return handle_generate(s, conn, rc);
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    mp_server *s = cls;
    (void)conn;
    (void)toe;
    req_ctx *rc = *con_cls;
    if (rc) {
        mp_sbuf_free(&rc->body);
        free(rc);
        *con_cls = NULL;
        pthread_mutex_lock(&s->mu);
        s->n_open_requests--;
        pthread_mutex_unlock(&s->mu);
    }
}

/* ---- start / stop -------------------------------------------------------------------------- */

/* libmicrohttpd decodes the path and the query arguments in place into C strings, so a "%00" would
 * end them early (GET /v1/models/NAME%00junk read as NAME: 200), and 0.9.x gives the handler no
 * decoded length to compare. This unescaper leaves each "%00" as those three characters, which no
 * route or served name matches (404), and decodes all else with MHD's own MHD_http_unescape, as its
 * default does. Splitting at "%00" changes nothing else: a '%' before it cannot take its characters
 * as hex digits, as '%' is not one. */
static size_t unescape_keeping_nul_escapes(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    char *out = s; /* never past `in`: decoding only shortens */
    const char *in = s;
    for (;;) {
        const char *nul_escape = strstr(in, "%00");
        size_t n = nul_escape ? (size_t)(nul_escape - in) : strlen(in);
        memmove(out, in, n);
        out[n] = '\0';
        out += MHD_http_unescape(out);
        if (!nul_escape)
            break;
        memcpy(out, "%00", 3);
        out += 3;
        in = nul_escape + 3;
    }
    *out = '\0';
    return (size_t)(out - s);
}

static int start_http(mp_server *s, mp_error *err)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    /* ITC: MHD_quiesce_daemon needs it in this threading mode. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s->host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(s->o.port);
    } else if (inet_pton(AF_INET6, s->host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(s->o.port);
        flags |= MHD_USE_IPv6;
    } else {
        return mp_fail(err, MP_ERR_USAGE, "serve", NULL, "--host '%s' is not a numeric IPv4 or IPv6 address", s->host);
    }
    s->httpd =
        MHD_start_daemon(flags, s->o.port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned int)s->o.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
                         (unsigned int)s->o.timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                         MHD_OPTION_UNESCAPE_CALLBACK, unescape_keeping_nul_escapes, NULL, MHD_OPTION_END);
    if (!s->httpd)
        return mp_fail(err, MP_ERR_INPUT, "serve", NULL, "cannot listen on %s port %u (in use, or not allowed)",
                       s->host, s->o.port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->httpd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di && di->port ? di->port : s->o.port;
    return MP_OK;
}

static char *dup_or_null(const char *v)
{
    return v ? strdup(v) : NULL;
}

int mp_server_start(mp_model *m, const mp_serve_opts *o, mp_server **out, mp_error *err)
{
    *out = NULL;
    if (o->slots == 0 || o->ctx == 0 || o->max_tokens == 0 || o->max_body == 0 || o->max_connections == 0)
        return mp_fail(err, MP_ERR_USAGE, "serve", NULL,
                       "slots, ctx, max_tokens, max_body and connections must be > 0");
    mp_server *s = calloc(1, sizeof *s);
    if (!s)
        return mp_fail(err, MP_ERR_INPUT, "serve", NULL, "out of memory");
    s->model = m;
    s->o = *o;
    s->tok = mp_model_tokenizer(m);
    s->chat = mp_model_chat_format(m);
    s->eos = mp_model_eos(m);
    s->vocab = mp_model_vocab(m);
    s->started = time(NULL);
    s->host = strdup(o->host ? o->host : "127.0.0.1");
    s->model_name = strdup(o->model_name ? o->model_name : "moepack");
    s->api_key = o->api_key && o->api_key[0] ? dup_or_null(o->api_key) : NULL;
    s->o.host = s->host;
    s->o.model_name = s->model_name;
    s->o.api_key = s->api_key;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    int rc;
    if (!s->host || !s->model_name || (o->api_key && o->api_key[0] && !s->api_key))
        rc = mp_fail(err, MP_ERR_INPUT, "serve", NULL, "out of memory");
    else if (!s->tok)
        rc = mp_fail(err, MP_ERR_INPUT, "serve", NULL, "the model has no tokenizer");
    else if ((rc = mp_sched_start(s, err)) == MP_OK)
        rc = start_http(s, err);
    if (rc != MP_OK) {
        mp_server_stop(s);
        return rc;
    }
    *out = s;
    return MP_OK;
}

uint16_t mp_server_port(const mp_server *s)
{
    return s->port;
}

void mp_server_stop(mp_server *s)
{
    if (!s)
        return;
    /* Refuse new connections, end every job (waiting handlers and streams
     * then return), and only then join the connection threads. */
    MHD_socket listen_fd = s->httpd ? MHD_quiesce_daemon(s->httpd) : MHD_INVALID_SOCKET;
    mp_sched_stop(s);
    /* The handlers of the ended jobs queue their answers (a 503 for a queued
     * request, a stream's error event), which their connection threads send
     * after the handlers return; MHD_stop_daemon shuts every socket down, so
     * it waits until those requests complete, at most SHUTDOWN_DRAIN_MS (a
     * client that stopped reading must not hold the exit). */
    for (int waited = 0; s->httpd && waited < SHUTDOWN_DRAIN_MS; waited += 5) {
        pthread_mutex_lock(&s->mu);
        bool open = s->n_open_requests > 0;
        pthread_mutex_unlock(&s->mu);
        if (!open)
            break;
        nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
    }
    if (s->httpd)
        MHD_stop_daemon(s->httpd);
    if (listen_fd != MHD_INVALID_SOCKET) /* quiesced: MHD left it to us */
        close(listen_fd);
    pthread_cond_destroy(&s->work);
    pthread_mutex_destroy(&s->mu);
    free(s->host);
    free(s->model_name);
    free(s->api_key);
    free(s);
}
