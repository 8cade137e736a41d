/*
 * serve.c — `continual serve`: one worker of a pool serving the live streams of one model over NATS
 * JetStream. docs/serve.md is the protocol and the guarantee; in short:
 *
 *   <P>.in.<id>    JetStream stream <P>_IN: the frames of stream <id> (raw float32 of the model's
 *                  input frame (B, C, *S)); an empty message ends the sequence (flushes the padding).
 *   <P>.out.<id>   JetStream stream <P>_OUT: each output frame, headers Co-Seq (the <P>_IN sequence
 *                  of the input that produced it) and Co-Index (its index in the stream's outputs),
 *                  Nats-Msg-Id "<id>:<index>"; after an end, a marker with Co-End and Co-Count.
 *   <P>_leases     KV bucket, TTL --lease-ms: "s.<id>" = the owner's name (held while renewed),
 *                  "w.<name>" = a live worker (for the fair share).
 *   <P>_ckpt       KV bucket: "<id>" = the checkpoint (last input sequence consumed, next output
 *                  index, owner, co_stream_save bytes). Every write is conditional on the revision
 *                  the writer last wrote or read, so a worker that lost the stream cannot write.
 *
 * One thread steps (co_forward_step_streams over the owned streams that have a frame). Input is
 * read by asking the stream's leader for "the first message of <P>.in.<id> at or after sequence
 * last + 1" (JetStream's STREAM.MSG.GET with next_by_subj): no consumer state that a node failure
 * could reset or reorder, and no replica that came back from a crash with a hole in its store
 * (with nats-server 2.9 both ordered consumers and direct gets skipped a frame after a kill -9
 * of a node, in the cluster test). A plain subscription to the
 * subject rings a bell when a frame arrives (the client's thread only sets a flag), and every
 * owned stream is also polled now and then. Publish acknowledgements come back on the client's
 * thread and only flag failures and count duplicates.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli/serve.h"

#include <cJSON.h>
#include <continual.h>
#include <errno.h>
#include <nats/nats.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 2

/* ---- protocol constants (docs/serve.md) ---- */
#define SERVE_ID_MAX 64              /* stream id and worker name: [A-Za-z0-9_-], at most this - 1 chars */
#define SERVE_PREFIX_MAX 32
#define SERVE_SUBJECT_MAX 160
#define CKPT_MAGIC "COSRV001"        /* 8 bytes: checkpoint record, layout version 1 */
#define CKPT_MAGIC_LEN 8
#define CKPT_HEADER_BYTES (CKPT_MAGIC_LEN + 5 * 8 + SERVE_ID_MAX)
#define CKPT_FLAG_RELEASED 1u        /* written by a graceful release or an end: not a take-over */
#define CKPT_FLAG_CLAIM 2u           /* the first write of a new owner (fences the previous one) */
#define HDR_SEQ "Co-Seq"
#define HDR_INDEX "Co-Index"
#define HDR_END "Co-End"
#define HDR_COUNT "Co-Count"
#define HDR_TIME "Co-Time"           /* copied from the input to its outputs (latency measurements) */
#define HDR_WORKER "Co-Worker"       /* the publishing worker (fencing checks) */
#define KV_WRONG_LAST "wrong last sequence"

/* ---- tuning ---- */
#define NS_PER_MS 1000000LL
#define IN_DUPLICATE_WINDOW_MS (2 * 60 * 1000)   /* publishers' retries of an input frame */
#define LAG_RETRY_MS 2                           /* a rung stream whose get found nothing yet (a lagging replica) */
#define LAG_WINDOW_MS 200                        /* ... is retried that often for this long after the bell */
#define IDLE_POLL_MS 250                         /* a stream without a bell is polled this often anyway */
#define ERROR_RETRY_MS 50
#define REQUEST_WAIT_MS 2000                     /* JetStream API calls and publish acknowledgements */
#define RECONNECT_WAIT_MS 100
#define MAX_PENDING_PUBLISHES 4096
#define IDLE_WAIT_MS 5                           /* the stepping loop's wait when no frame is queued */
#define FAILED_IDS_MAX 256                       /* publish failures remembered between two loop turns */
#define MSG_GET_API "$JS.API.STREAM.MSG.GET."  /* + stream name: answered by the stream's leader */
#define JS_NOT_FOUND 404
#define RENEWALS_PER_LEASE 3                     /* renew every lease_ms / 3 */
#define SCANS_PER_LEASE 4                        /* look for unowned streams every lease_ms / 4 */

/* ---- options ---- */
typedef struct serve_options {
    const char *model_path;
    const char *nats_urls;
    char prefix[SERVE_PREFIX_MAX];
    char name[SERVE_ID_MAX];
    int max_streams;
    long checkpoint_every;
    long lease_ms;
    long replicas;
    long dup_window_s;
    long stats_ms;
    long ckpt_history;
    int batch;
    int setup_only;
} serve_options;

/* ---- one owned stream ---- */
typedef struct served {
    int used;
    uint32_t gen;                 /* bumped when the slot is freed: queued messages of the old owner are dropped */
    char id[SERVE_ID_MAX];
    co_stream *stream;
    natsSubscription *bell;       /* plain subscription to <P>.in.<id>: a frame arrived */
    atomic_int rung;              /* set by the bell */
    double rung_ms, next_get_ms;
    float *x;                     /* one input frame (the payload copied: a message's data need not be aligned) */
    float *y;                     /* one output frame */
    float *y_finish;              /* co_stream_finish's clip */
    int64_t finish_frames;
    uint64_t lease_rev, ckpt_rev;
    double lease_ok_ms;           /* when the last successful lease write was sent (monotonic) */
    uint64_t last_seq;            /* last <P>_IN sequence consumed */
    uint64_t out_index;           /* index of the next output */
    uint64_t eos_count;
    long since_ckpt;              /* frames consumed since the last checkpoint */
    const char *cur_time;         /* Co-Time of the frame being stepped, or NULL */
    char time_hdr[32];
} served;

typedef struct worker {
    serve_options opt;
    co_model *model;
    co_multistream *multi;
    int64_t in_n, out_n;          /* floats of one input / output frame */
    int64_t out_rows, out_spatial; /* an output frame is out_rows = B x C' rows of out_spatial floats */
    natsConnection *nc;
    jsCtx *js;
    kvStore *leases, *ckpt;
    char in_stream[SERVE_PREFIX_MAX + 8], out_stream[SERVE_PREFIX_MAX + 8];
    char lease_bucket[SERVE_PREFIX_MAX + 16], ckpt_bucket[SERVE_PREFIX_MAX + 16];
    served *slots;
    int n_owned;
    pthread_mutex_t lock;         /* the bells and the publish failures */
    pthread_cond_t wake;
    atomic_int any_rung;
    /* publish failures reported by the client's thread (stream ids) */
    char failed[FAILED_IDS_MAX][SERVE_ID_MAX];
    int n_failed, failed_overflow;
    /* step arguments */
    co_stream **step_streams;
    const float **step_x;
    float **step_y;
    int *step_has, *step_slot;
    uint64_t *step_seq;
    unsigned char *ckpt_buf;
    size_t ckpt_cap;
    unsigned char *get_buf;       /* a fetched message's payload, decoded */
    size_t get_cap;
    /* metrics */
    atomic_ullong duplicates, published_ok;
    unsigned long long frames, outputs, checkpoints, takeovers, fenced, lost, bad_frames, ends;
    double ckpt_ms_sum, ckpt_ms_max;
    double stats_t0;
    unsigned long long stats_frames0;
    unsigned rng;
} worker;

static volatile sig_atomic_t g_stop;
static worker *g_worker; /* the process's one worker: the delivery callbacks' context */

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static long long unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void say(const worker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "serve[%s] %lld: ", w->opt.name, unix_ms());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("continual serve: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static int fail_nats(natsStatus s, const char *what)
{
    const char *text = nats_GetLastError(NULL);
    return fail("%s: %s%s%s", what, natsStatus_GetText(s), text && text[0] ? ": " : "", text ? text : "");
}

static int usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("continual serve: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see 'continual help')\n", stderr);
    va_end(ap);
    return EXIT_USAGE;
}

/* Names that become subject tokens and KV keys. */
static int valid_token(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n >= max) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return 0;
    }
    return 1;
}

static int parse_long_opt(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_serve_options(int argc, char **argv, serve_options *o)
{
    memset(o, 0, sizeof *o);
    o->nats_urls = "nats://127.0.0.1:4222";
    strcpy(o->prefix, "co");
    snprintf(o->name, sizeof o->name, "w%ld", (long)getpid());
    o->max_streams = 64;
    o->checkpoint_every = 32;
    o->lease_ms = 3000;
    o->replicas = 1;
    o->dup_window_s = 600;
    o->stats_ms = 5000;
    o->ckpt_history = 1;
    o->batch = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            if (o->model_path) return usage("unexpected argument '%s'", a);
            o->model_path = a;
            continue;
        }
        if (strcmp(a, "--setup") == 0) {
            o->setup_only = 1;
            continue;
        }
        if (i + 1 >= argc) return usage("option %s needs a value", a);
        const char *v = argv[++i];
        long n = 0;
        if (strcmp(a, "--nats") == 0) o->nats_urls = v;
        else if (strcmp(a, "--prefix") == 0) {
            if (!valid_token(v, sizeof o->prefix)) return usage("--prefix '%s': 1 to %d of [A-Za-z0-9_-]", v, SERVE_PREFIX_MAX - 1);
            strcpy(o->prefix, v);
        } else if (strcmp(a, "--name") == 0) {
            if (!valid_token(v, sizeof o->name)) return usage("--name '%s': 1 to %d of [A-Za-z0-9_-]", v, SERVE_ID_MAX - 1);
            strcpy(o->name, v);
        } else if (strcmp(a, "--max-streams") == 0) {
            if (parse_long_opt(v, 1, 65536, &n)) return usage("--max-streams '%s' is not an integer in [1, 65536]", v);
            o->max_streams = (int)n;
        } else if (strcmp(a, "--checkpoint-every") == 0) {
            if (parse_long_opt(v, 1, 1L << 30, &o->checkpoint_every)) return usage("--checkpoint-every '%s' is not an integer >= 1", v);
        } else if (strcmp(a, "--lease-ms") == 0) {
            if (parse_long_opt(v, 100, 3600000L, &o->lease_ms)) return usage("--lease-ms '%s' is not an integer in [100, 3600000]", v);
        } else if (strcmp(a, "--replicas") == 0) {
            if (parse_long_opt(v, 1, 5, &o->replicas)) return usage("--replicas '%s' is not an integer in [1, 5]", v);
        } else if (strcmp(a, "--dup-window-s") == 0) {
            if (parse_long_opt(v, 1, 7 * 86400L, &o->dup_window_s)) return usage("--dup-window-s '%s' is not an integer in [1, 604800]", v);
        } else if (strcmp(a, "--stats-ms") == 0) {
            if (parse_long_opt(v, 0, 3600000L, &o->stats_ms)) return usage("--stats-ms '%s' is not an integer >= 0", v);
        } else if (strcmp(a, "--checkpoint-history") == 0) {
            if (parse_long_opt(v, 1, 64, &o->ckpt_history)) return usage("--checkpoint-history '%s' is not an integer in [1, 64]", v);
        } else if (strcmp(a, "--batch") == 0) {
            if (parse_long_opt(v, 1, 1L << 20, &n)) return usage("--batch '%s' is not an integer in [1, 2^20]", v);
            o->batch = (int)n;
        } else
            return usage("unknown option '%s'", a);
    }
    if (!o->model_path) return usage("missing MODEL");
    return 0;
}

/* ---- little-endian fields of the checkpoint record ---- */
static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

typedef struct ckpt_view {
    uint64_t last_seq, out_index, eos_count, flags;
    char owner[SERVE_ID_MAX];
    const unsigned char *state;
    size_t state_len;
} ckpt_view;

static int ckpt_decode(const unsigned char *p, size_t n, ckpt_view *v)
{
    if (n < CKPT_HEADER_BYTES || memcmp(p, CKPT_MAGIC, CKPT_MAGIC_LEN) != 0) return -1;
    const unsigned char *f = p + CKPT_MAGIC_LEN;
    v->last_seq = get_u64(f);
    v->out_index = get_u64(f + 8);
    v->eos_count = get_u64(f + 16);
    v->flags = get_u64(f + 24);
    uint64_t state_len = get_u64(f + 32);
    memcpy(v->owner, f + 40, SERVE_ID_MAX);
    v->owner[SERVE_ID_MAX - 1] = 0;
    if (state_len != n - CKPT_HEADER_BYTES) return -1;
    v->state = p + CKPT_HEADER_BYTES;
    v->state_len = (size_t)state_len;
    return 0;
}

/* Encodes slot s's checkpoint into w->ckpt_buf; returns its length, 0 on failure. */
static size_t ckpt_encode(worker *w, const served *s, uint64_t flags)
{
    size_t state_len = co_stream_state_size(s->stream);
    size_t need = CKPT_HEADER_BYTES + state_len;
    if (need > w->ckpt_cap) {
        unsigned char *nb = realloc(w->ckpt_buf, need);
        if (!nb) return 0;
        w->ckpt_buf = nb;
        w->ckpt_cap = need;
    }
    unsigned char *p = w->ckpt_buf;
    memcpy(p, CKPT_MAGIC, CKPT_MAGIC_LEN);
    unsigned char *f = p + CKPT_MAGIC_LEN;
    put_u64(f, s->last_seq);
    put_u64(f + 8, s->out_index);
    put_u64(f + 16, s->eos_count);
    put_u64(f + 24, flags);
    put_u64(f + 32, state_len);
    memset(f + 40, 0, SERVE_ID_MAX);
    memcpy(f + 40, w->opt.name, strlen(w->opt.name));
    if (co_stream_save(s->stream, p + CKPT_HEADER_BYTES, state_len, NULL) != CO_OK) return 0;
    return need;
}

/* A KV write refused because the key moved on: another writer holds the stream. */
static int kv_refused(natsStatus s)
{
    const char *text = nats_GetLastError(NULL);
    return s != NATS_OK && s != NATS_TIMEOUT && text && strstr(text, KV_WRONG_LAST) != NULL;
}

/* ---- setup: streams and buckets (idempotent; the first worker creates them) ---- */
static natsStatus ensure_stream(worker *w, const char *name, const char *subject, int64_t duplicates_ns)
{
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = name;
    const char *subjects[1] = {subject};
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = w->opt.replicas;
    cfg.Duplicates = duplicates_ns;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, w->js, &cfg, NULL, &jerr);
    if (s != NATS_OK) { /* already there (perhaps with other settings: the first creator's win) */
        jsStreamInfo_Destroy(si);
        si = NULL;
        s = js_GetStreamInfo(&si, w->js, name, NULL, &jerr);
    }
    jsStreamInfo_Destroy(si);
    return s;
}

static natsStatus ensure_bucket(worker *w, kvStore **kv, const char *bucket, int64_t ttl_ms, long history)
{
    kvConfig cfg;
    kvConfig_Init(&cfg);
    cfg.Bucket = bucket;
    cfg.History = (uint8_t)history;
    cfg.TTL = ttl_ms * NS_PER_MS; /* nanoseconds in cnats 3.4 */
    cfg.Replicas = (int)w->opt.replicas;
    cfg.StorageType = js_FileStorage;
    natsStatus s = js_CreateKeyValue(kv, w->js, &cfg);
    if (s != NATS_OK) {
        const char *why = nats_GetLastError(NULL);
        char created[256];
        snprintf(created, sizeof created, "%s", why ? why : "");
        s = js_KeyValue(kv, w->js, bucket);
        if (s != NATS_OK) fprintf(stderr, "continual serve: creating bucket %s: %s\n", bucket, created);
    }
    return s;
}

static int setup_nats(worker *w)
{
    char subj[SERVE_SUBJECT_MAX];
    snprintf(w->in_stream, sizeof w->in_stream, "%s_IN", w->opt.prefix);
    snprintf(w->out_stream, sizeof w->out_stream, "%s_OUT", w->opt.prefix);
    snprintf(w->lease_bucket, sizeof w->lease_bucket, "%s_leases", w->opt.prefix);
    snprintf(w->ckpt_bucket, sizeof w->ckpt_bucket, "%s_ckpt", w->opt.prefix);
    natsStatus s;
    snprintf(subj, sizeof subj, "%s.in.>", w->opt.prefix);
    if ((s = ensure_stream(w, w->in_stream, subj, IN_DUPLICATE_WINDOW_MS * NS_PER_MS)) != NATS_OK)
        return fail_nats(s, "cannot create or find the input stream");
    snprintf(subj, sizeof subj, "%s.out.>", w->opt.prefix);
    if ((s = ensure_stream(w, w->out_stream, subj, (int64_t)w->opt.dup_window_s * 1000 * NS_PER_MS)) != NATS_OK)
        return fail_nats(s, "cannot create or find the output stream");
    if ((s = ensure_bucket(w, &w->leases, w->lease_bucket, w->opt.lease_ms, 1)) != NATS_OK)
        return fail_nats(s, "cannot create or find the lease bucket");
    if ((s = ensure_bucket(w, &w->ckpt, w->ckpt_bucket, 0, w->opt.ckpt_history)) != NATS_OK)
        return fail_nats(s, "cannot create or find the checkpoint bucket");
    return 0;
}

/* ---- client callbacks (the client's threads) ---- */
static void on_bell(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    worker *w = g_worker;
    const int i = (int)((uintptr_t)closure & 0xffff);
    const uint32_t gen = (uint32_t)((uintptr_t)closure >> 16);
    pthread_mutex_lock(&w->lock);
    served *s = &w->slots[i];
    if (s->used && (s->gen & 0xffffu) == (gen & 0xffffu)) {
        s->rung = 1;
        w->any_rung = 1;
        pthread_cond_signal(&w->wake);
    }
    pthread_mutex_unlock(&w->lock);
    natsMsg_Destroy(msg);
}

/* The stream id of an output subject "<P>.out.<id>". */
static const char *out_subject_id(const worker *w, const char *subject)
{
    size_t n = strlen(w->opt.prefix);
    if (strncmp(subject, w->opt.prefix, n) != 0 || strncmp(subject + n, ".out.", 5) != 0) return NULL;
    return subject + n + 5;
}

static void on_publish_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    worker *w = closure;
    if (pa) {
        atomic_fetch_add(&w->published_ok, 1);
        if (pa->Duplicate) atomic_fetch_add(&w->duplicates, 1);
    } else if (pae) {
        const char *id = msg ? out_subject_id(w, natsMsg_GetSubject(msg)) : NULL;
        pthread_mutex_lock(&w->lock);
        if (id && w->n_failed < FAILED_IDS_MAX) snprintf(w->failed[w->n_failed++], SERVE_ID_MAX, "%s", id);
        else w->failed_overflow = 1;
        pthread_mutex_unlock(&w->lock);
    }
    natsMsg_Destroy(msg);
}

/* ---- slots ---- */
static uintptr_t slot_tag(const served *s, int slot) { return ((uintptr_t)s->gen << 16) | (uintptr_t)slot; }

/* Forgets slot i here (no write to NATS): its subscription, queued frames and stream. */
static void slot_free(worker *w, int i)
{
    served *s = &w->slots[i];
    if (s->bell) {
        natsSubscription_Unsubscribe(s->bell);
        natsSubscription_Destroy(s->bell);
        s->bell = NULL;
    }
    pthread_mutex_lock(&w->lock);
    s->gen++; /* a bell still under way for the old stream rings nothing */
    s->used = 0;
    pthread_mutex_unlock(&w->lock);
    co_stream_free(s->stream);
    s->stream = NULL;
    free(s->x);
    free(s->y);
    free(s->y_finish);
    s->x = s->y = s->y_finish = NULL;
    w->n_owned--;
}

static void lease_key(char *buf, size_t n, const char *id) { snprintf(buf, n, "s.%s", id); }

/* Renews slot i's lease. Returns 1 while held, 0 when it is lost (the slot is then freed). A
 * timeout keeps the slot until the lease's own time is up. */
static int lease_renew(worker *w, int i)
{
    served *s = &w->slots[i];
    char key[SERVE_ID_MAX + 4];
    lease_key(key, sizeof key, s->id);
    double t0 = now_ms();
    uint64_t rev = 0;
    natsStatus st = kvStore_Update(&rev, w->leases, key, w->opt.name, (int)strlen(w->opt.name), s->lease_rev);
    if (st == NATS_OK) {
        s->lease_rev = rev;
        s->lease_ok_ms = t0;
        return 1;
    }
    if (kv_refused(st) || t0 - s->lease_ok_ms >= (double)w->opt.lease_ms) {
        say(w, "lost the lease of '%s' (%s): dropped at seq %llu", s->id, natsStatus_GetText(st), (unsigned long long)s->last_seq);
        w->lost++;
        slot_free(w, i);
        return 0;
    }
    return 1;
}

/* Outputs are published only while the lease is surely held: within half its time of the last
 * successful renewal; past that, renew first (a worker that was paused finds it lost here). */
static int lease_fresh(worker *w, int i)
{
    served *s = &w->slots[i];
    if (now_ms() - s->lease_ok_ms < (double)w->opt.lease_ms / 2) return 1;
    return lease_renew(w, i);
}

/* A header holding an unsigned number. */
static void set_header_u64(natsMsg *m, const char *name, uint64_t value)
{
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)value);
    natsMsgHeader_Set(m, name, num);
}

/* Publishes message m (created with status st) on `out` under message id msg_id (JetStream
 * de-duplicates by it); a message that could not be created or sent puts the stream on the
 * failed list (handle_publish_failures). */
static void publish_out(worker *w, const served *s, natsMsg *m, natsStatus st, const char *msg_id)
{
    if (st == NATS_OK) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = msg_id;
        po.MaxWait = REQUEST_WAIT_MS;
        st = js_PublishMsgAsync(w->js, &m, &po);
    }
    if (st != NATS_OK) {
        natsMsg_Destroy(m);
        pthread_mutex_lock(&w->lock);
        if (w->n_failed < FAILED_IDS_MAX) snprintf(w->failed[w->n_failed++], SERVE_ID_MAX, "%s", s->id);
        else w->failed_overflow = 1;
        pthread_mutex_unlock(&w->lock);
    }
}

static void publish_output(worker *w, served *s, const float *y, int64_t frames, uint64_t seq)
{
    char subj[SERVE_SUBJECT_MAX], msg_id[SERVE_ID_MAX + 32];
    snprintf(subj, sizeof subj, "%s.out.%s", w->opt.prefix, s->id);
    const int frame_bytes = (int)(w->out_n * (int64_t)sizeof(float));
    for (int64_t f = 0; f < frames; f++) {
        natsMsg *m = NULL;
        natsStatus st = natsMsg_Create(&m, subj, NULL, (const char *)(y + f * w->out_n), frame_bytes);
        if (st == NATS_OK) {
            set_header_u64(m, HDR_SEQ, seq);
            set_header_u64(m, HDR_INDEX, s->out_index);
            if (s->cur_time) natsMsgHeader_Set(m, HDR_TIME, s->cur_time);
            natsMsgHeader_Set(m, HDR_WORKER, w->opt.name);
            snprintf(msg_id, sizeof msg_id, "%s:%llu", s->id, (unsigned long long)s->out_index);
        }
        publish_out(w, s, m, st, msg_id);
        s->out_index++;
        w->outputs++;
    }
}

static void publish_end(worker *w, served *s, uint64_t seq)
{
    char subj[SERVE_SUBJECT_MAX], msg_id[SERVE_ID_MAX + 48];
    snprintf(subj, sizeof subj, "%s.out.%s", w->opt.prefix, s->id);
    natsMsg *m = NULL;
    natsStatus st = natsMsg_Create(&m, subj, NULL, NULL, 0);
    if (st == NATS_OK) {
        set_header_u64(m, HDR_SEQ, seq);
        set_header_u64(m, HDR_END, s->eos_count);
        set_header_u64(m, HDR_COUNT, s->out_index);
        snprintf(msg_id, sizeof msg_id, "%s:end:%llu", s->id, (unsigned long long)s->eos_count);
    }
    publish_out(w, s, m, st, msg_id);
}

/* Streams whose outputs failed to be stored are dropped without a checkpoint: whoever takes them
 * next replays from the last checkpoint and publishes the same outputs under the same ids. */
static void handle_publish_failures(worker *w)
{
    char failed[FAILED_IDS_MAX][SERVE_ID_MAX];
    pthread_mutex_lock(&w->lock);
    int n = w->n_failed, all = w->failed_overflow;
    memcpy(failed, w->failed, (size_t)n * SERVE_ID_MAX);
    w->n_failed = 0;
    w->failed_overflow = 0;
    pthread_mutex_unlock(&w->lock);
    for (int i = 0; i < w->opt.max_streams; i++) {
        served *s = &w->slots[i];
        if (!s->used) continue;
        int hit = all;
        for (int k = 0; k < n && !hit; k++) hit = strcmp(failed[k], s->id) == 0;
        if (hit) {
            say(w, "publishing for '%s' failed: dropped at seq %llu (replayed from its checkpoint)", s->id,
                (unsigned long long)s->last_seq);
            w->lost++;
            slot_free(w, i);
        }
    }
}

/* Waits until every output published so far is stored (or failed). */
static int outputs_settled(worker *w)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 2 * REQUEST_WAIT_MS;
    natsStatus st = js_PublishAsyncComplete(w->js, &po);
    handle_publish_failures(w);
    return st == NATS_OK;
}

/* Writes slot i's checkpoint, conditional on the revision it last wrote. Call after
 * outputs_settled. Returns 1 if written; a refusal (the stream was taken over) frees the slot. */
static int checkpoint(worker *w, int i, uint64_t flags)
{
    served *s = &w->slots[i];
    size_t len = ckpt_encode(w, s, flags);
    if (!len) {
        say(w, "cannot save the state of '%s': %s", s->id, co_last_error());
        return 0;
    }
    double t0 = now_ms();
    uint64_t rev = 0;
    natsStatus st = kvStore_Update(&rev, w->ckpt, s->id, w->ckpt_buf, (int)len, s->ckpt_rev);
    double dt = now_ms() - t0;
    if (st != NATS_OK) {
        if (kv_refused(st)) {
            say(w, "fenced: the checkpoint of '%s' was refused (another worker took it): dropped at seq %llu", s->id,
                (unsigned long long)s->last_seq);
            w->fenced++;
            slot_free(w, i);
        }
        return 0;
    }
    s->ckpt_rev = rev;
    s->since_ckpt = 0;
    w->checkpoints++;
    w->ckpt_ms_sum += dt;
    if (dt > w->ckpt_ms_max) w->ckpt_ms_max = dt;
    /* the frames up to the checkpoint are never needed again */
    char subj[SERVE_SUBJECT_MAX];
    snprintf(subj, sizeof subj, "%s.in.%s", w->opt.prefix, s->id);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Stream.Purge.Subject = subj;
    jo.Stream.Purge.Sequence = s->last_seq + 1;
    js_PurgeStream(w->js, w->in_stream, &jo, NULL);
    return 1;
}

/* Lets the stream go: last checkpoint marked released, then the lease removed if it is surely
 * still ours (else it just expires). */
static void release(worker *w, int i)
{
    served *s = &w->slots[i];
    if (checkpoint(w, i, CKPT_FLAG_RELEASED) && now_ms() - s->lease_ok_ms < (double)w->opt.lease_ms / 2) {
        char subj[SERVE_SUBJECT_MAX];
        snprintf(subj, sizeof subj, "$KV.%s.s.%s", w->lease_bucket, s->id);
        char kv_stream[SERVE_PREFIX_MAX + 24];
        snprintf(kv_stream, sizeof kv_stream, "KV_%s", w->lease_bucket);
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Stream.Purge.Subject = subj;
        js_PurgeStream(w->js, kv_stream, &jo, NULL);
    }
    if (w->slots[i].used) slot_free(w, i);
}

/* Takes stream `id` if its lease is free: lease, checkpoint (claimed by a conditional write, which
 * fences the previous owner), state restored, input subscribed from the next sequence. */
static int acquire(worker *w, const char *id)
{
    int i = 0;
    while (i < w->opt.max_streams && w->slots[i].used) i++;
    if (i == w->opt.max_streams) return 0;
    served *s = &w->slots[i];
    char key[SERVE_ID_MAX + 4];
    lease_key(key, sizeof key, id);
    double t0 = now_ms();
    uint64_t lease_rev = 0;
    if (kvStore_Create(&lease_rev, w->leases, key, w->opt.name, (int)strlen(w->opt.name)) != NATS_OK) return 0;
    memset(s->id, 0, sizeof s->id);
    snprintf(s->id, sizeof s->id, "%s", id);
    s->lease_rev = lease_rev;
    s->lease_ok_ms = t0;
    s->last_seq = s->out_index = s->eos_count = 0;
    s->since_ckpt = 0;
    s->cur_time = NULL;
    s->rung = 0;
    s->rung_ms = s->next_get_ms = 0;
    pthread_mutex_lock(&w->lock);
    s->used = 1;
    pthread_mutex_unlock(&w->lock);
    w->n_owned++;
    co_status cs = co_stream_create(w->model, w->opt.batch, &s->stream);
    s->finish_frames = cs == CO_OK ? co_stream_finish_max_output(s->stream) : 0;
    s->x = malloc((size_t)w->in_n * sizeof(float));
    s->y = malloc((size_t)w->out_n * sizeof(float));
    s->y_finish = malloc((size_t)(s->finish_frames > 0 ? s->finish_frames : 1) * (size_t)w->out_n * sizeof(float));
    if (cs != CO_OK || !s->x || !s->y || !s->y_finish) {
        say(w, "cannot create a stream for '%s': %s", id, cs != CO_OK ? co_last_error() : "out of memory");
        slot_free(w, i);
        return 0;
    }
    kvEntry *e = NULL;
    natsStatus st = kvStore_Get(&e, w->ckpt, id);
    int takeover = 0;
    char prev_owner[SERVE_ID_MAX] = "";
    uint64_t rev = 0;
    if (st == NATS_OK) {
        ckpt_view v;
        if (ckpt_decode(kvEntry_Value(e), (size_t)kvEntry_ValueLen(e), &v) != 0 ||
            co_stream_restore(s->stream, v.state, v.state_len) != CO_OK) {
            say(w, "the checkpoint of '%s' does not fit this model: not served (%s)", id, co_last_error());
            kvEntry_Destroy(e);
            slot_free(w, i);
            return 0;
        }
        s->last_seq = v.last_seq;
        s->out_index = v.out_index;
        s->eos_count = v.eos_count;
        takeover = !(v.flags & CKPT_FLAG_RELEASED);
        snprintf(prev_owner, sizeof prev_owner, "%s", v.owner);
        size_t len = ckpt_encode(w, s, CKPT_FLAG_CLAIM);
        st = len ? kvStore_Update(&rev, w->ckpt, id, w->ckpt_buf, (int)len, kvEntry_Revision(e)) : NATS_NO_MEMORY;
        kvEntry_Destroy(e);
    } else if (st == NATS_NOT_FOUND) {
        size_t len = ckpt_encode(w, s, CKPT_FLAG_CLAIM);
        st = len ? kvStore_Create(&rev, w->ckpt, id, w->ckpt_buf, (int)len) : NATS_NO_MEMORY;
    }
    if (st != NATS_OK) { /* a stale read or a race with the previous owner: try again later */
        slot_free(w, i);
        return 0;
    }
    s->ckpt_rev = rev;
    char subj[SERVE_SUBJECT_MAX];
    snprintf(subj, sizeof subj, "%s.in.%s", w->opt.prefix, id);
    st = natsConnection_Subscribe(&s->bell, w->nc, subj, on_bell, (void *)slot_tag(s, i));
    if (st != NATS_OK) {
        say(w, "cannot subscribe to %s: %s", subj, natsStatus_GetText(st));
        s->bell = NULL;
        slot_free(w, i);
        return 0;
    }
    if (takeover) {
        w->takeovers++;
        say(w, "take-over of '%s' from '%s' at seq %llu, output %llu", id, prev_owner, (unsigned long long)s->last_seq,
            (unsigned long long)s->out_index);
    } else {
        say(w, "serving '%s' from seq %llu, output %llu", id, (unsigned long long)s->last_seq, (unsigned long long)s->out_index);
    }
    return 1;
}

/* ---- discovery and balance ---- */
/* The subjects of a stream that hold messages, filtered. NULL when the call failed. */
static jsStreamInfo *subjects_of(worker *w, const char *stream, const char *filter)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Stream.Info.SubjectsFilter = filter;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    if (js_GetStreamInfo(&si, w->js, stream, &jo, &jerr) != NATS_OK) return NULL;
    return si;
}

static void scan(worker *w)
{
    char filter[SERVE_SUBJECT_MAX], kv_stream[SERVE_PREFIX_MAX + 24], key[SERVE_ID_MAX + 4];
    snprintf(key, sizeof key, "w.%s", w->opt.name);
    kvStore_Put(NULL, w->leases, key, "1", 1); /* this worker is alive (for the others' fair share) */
    snprintf(filter, sizeof filter, "%s.in.>", w->opt.prefix);
    jsStreamInfo *in = subjects_of(w, w->in_stream, filter);
    snprintf(filter, sizeof filter, "$KV.%s.>", w->lease_bucket);
    snprintf(kv_stream, sizeof kv_stream, "KV_%s", w->lease_bucket);
    jsStreamInfo *ls = subjects_of(w, kv_stream, filter);
    if (!in || !ls || !in->State.Subjects) goto done;
    const jsStreamStateSubjects *ins = in->State.Subjects, *lss = ls->State.Subjects;
    const size_t in_prefix = strlen(w->opt.prefix) + 4, kv_prefix = strlen(w->lease_bucket) + 5;
    int workers = 0;
    for (int k = 0; lss && k < lss->Count; k++)
        if (strncmp(lss->List[k].Subject + kv_prefix, "w.", 2) == 0) workers++;
    if (workers < 1) workers = 1;
    const int total = ins->Count;
    int share = (total + workers - 1) / workers;
    if (share > w->opt.max_streams) share = w->opt.max_streams;
    int want = share - w->n_owned;
    const int start = total ? (int)(w->rng % (unsigned)total) : 0;
    w->rng = w->rng * 1103515245u + 12345u;
    for (int k = 0; k < total && want > 0 && !g_stop; k++) {
        const char *id = ins->List[(start + k) % total].Subject + in_prefix;
        if (!valid_token(id, SERVE_ID_MAX)) continue;
        int taken = 0;
        for (int j = 0; j < w->opt.max_streams && !taken; j++) taken = w->slots[j].used && strcmp(w->slots[j].id, id) == 0;
        for (int j = 0; lss && j < lss->Count && !taken; j++) {
            const char *lk = lss->List[j].Subject + kv_prefix;
            taken = strncmp(lk, "s.", 2) == 0 && strcmp(lk + 2, id) == 0;
        }
        if (!taken && acquire(w, id)) want--;
    }
done:
    jsStreamInfo_Destroy(in);
    jsStreamInfo_Destroy(ls);
}

/* ---- stepping ---- */
/* Base64 (RFC 4648, padded) into out (room for 3/4 of n bytes); returns the length, -1 if invalid. */
static long base64_decode(const char *in, size_t n, unsigned char *out)
{
    long len = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t k = 0; k < n && in[k] != '='; k++) {
        const char c = in[k];
        int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
              : c == '+' ? 62 : c == '/' ? 63 : -1;
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (unsigned char)(acc >> bits);
        }
    }
    return len;
}

/* The first input message of slot i after its last sequence, from the stream's leader. Returns 1
 * with its sequence, payload (w->get_buf, *len bytes) and Co-Time (s->time_hdr, "" if none); 0 when
 * there is none yet or the request failed (then the next try is scheduled). */
static int next_input(worker *w, int i, double t, uint64_t *seq, size_t *len)
{
    served *s = &w->slots[i];
    if (atomic_exchange(&s->rung, 0)) s->rung_ms = t; /* cleared before the get: a frame arriving during it rings again */
    char api[SERVE_SUBJECT_MAX], req[SERVE_SUBJECT_MAX + 64];
    snprintf(api, sizeof api, MSG_GET_API "%s", w->in_stream);
    snprintf(req, sizeof req, "{\"seq\":%llu,\"next_by_subj\":\"%s.in.%s\"}", (unsigned long long)(s->last_seq + 1),
             w->opt.prefix, s->id);
    natsMsg *reply = NULL;
    natsStatus st = natsConnection_RequestString(&reply, w->nc, api, req, REQUEST_WAIT_MS);
    int found = 0, missing = 0;
    cJSON *root = st == NATS_OK ? cJSON_ParseWithLength(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply)) : NULL;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
    if (err) missing = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(err, "code")) == JS_NOT_FOUND;
    if (msg) {
        const cJSON *jseq = cJSON_GetObjectItemCaseSensitive(msg, "seq");
        const char *data = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, "data"));
        const char *hdrs = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, "hdrs"));
        const size_t dn = data ? strlen(data) : 0, hn = hdrs ? strlen(hdrs) : 0;
        const size_t need = (dn > hn ? dn : hn) / 4 * 3 + 4;
        if (need > w->get_cap) {
            unsigned char *nb = realloc(w->get_buf, need);
            if (nb) {
                w->get_buf = nb;
                w->get_cap = need;
            }
        }
        s->time_hdr[0] = 0;
        if (cJSON_IsNumber(jseq) && need <= w->get_cap) {
            long hl = hdrs ? base64_decode(hdrs, hn, w->get_buf) : 0;
            if (hl > 0) { /* "NATS/1.0\r\nKey: value\r\n...": only Co-Time is used */
                w->get_buf[hl] = 0;
                const char *at = strstr((const char *)w->get_buf, "\r\n" HDR_TIME ": ");
                if (at) {
                    at += strlen("\r\n" HDR_TIME ": ");
                    size_t k = 0;
                    while (at[k] && at[k] != '\r' && k + 1 < sizeof s->time_hdr) s->time_hdr[k] = at[k], k++;
                    s->time_hdr[k] = 0;
                }
            }
            long dl = data ? base64_decode(data, dn, w->get_buf) : 0;
            *seq = (uint64_t)jseq->valuedouble;
            if (dl >= 0 && hl >= 0 && *seq > s->last_seq) {
                *len = (size_t)dl;
                found = 1;
            }
        }
    }
    cJSON_Delete(root);
    natsMsg_Destroy(reply);
    if (found) s->next_get_ms = t; /* more may be waiting */
    else if (missing) s->next_get_ms = t + (t - s->rung_ms < LAG_WINDOW_MS ? LAG_RETRY_MS : IDLE_POLL_MS);
    else s->next_get_ms = t + ERROR_RETRY_MS;
    return found;
}

static void end_of_sequence(worker *w, int i, uint64_t seq)
{
    served *s = &w->slots[i];
    int64_t t_out = 0;
    co_status cs = co_stream_finish(s->stream, s->y_finish, s->finish_frames, &t_out);
    if (cs != CO_OK) say(w, "end of '%s': %s", s->id, co_last_error());
    s->cur_time = NULL;
    for (int64_t f = 0; cs == CO_OK && f < t_out; f++) {
        /* the clip is (B, C', t_out, *S'): frame f is row r's f-th run of out_spatial floats */
        for (int64_t r = 0; r < w->out_rows; r++)
            memcpy(s->y + r * w->out_spatial, s->y_finish + (r * t_out + f) * w->out_spatial,
                   (size_t)w->out_spatial * sizeof(float));
        publish_output(w, s, s->y, 1, seq);
    }
    publish_end(w, s, seq);
    s->last_seq = seq;
    s->eos_count++;
    w->ends++;
    if (!outputs_settled(w) || !s->used) {
        if (s->used) slot_free(w, i); /* not confirmed: replayed from the last checkpoint */
        return;
    }
    release(w, i);
}

/* One frame for every owned stream that has one queued. Returns the frames stepped. */
static int step_round(worker *w)
{
    int n = 0;
    const double t = now_ms();
    for (int i = 0; i < w->opt.max_streams; i++) {
        served *s = &w->slots[i];
        while (s->used && (s->rung || t >= s->next_get_ms)) {
            if (!lease_fresh(w, i)) break;
            uint64_t seq = 0;
            size_t len = 0;
            if (!next_input(w, i, t, &seq, &len)) break;
            if (len == 0) {
                end_of_sequence(w, i, seq);
                break;
            }
            if (len != (size_t)w->in_n * sizeof(float)) {
                say(w, "'%s' seq %llu: %zu bytes, a frame is %lld: skipped", s->id, (unsigned long long)seq, len,
                    (long long)(w->in_n * (int64_t)sizeof(float)));
                w->bad_frames++;
                s->last_seq = seq;
                continue;
            }
            memcpy(s->x, w->get_buf, len);
            w->step_streams[n] = s->stream;
            w->step_x[n] = s->x;
            w->step_y[n] = s->y;
            w->step_slot[n] = i;
            w->step_seq[n] = seq;
            n++;
            break;
        }
    }
    if (n == 0) return 0;
    co_status cs = co_forward_step_streams(w->multi, w->step_streams, n, w->step_x, w->step_y, w->step_has, CO_UPDATE_STATE);
    for (int k = 0; k < n; k++) {
        const int i = w->step_slot[k];
        served *s = &w->slots[i];
        const uint64_t seq = w->step_seq[k];
        if (cs != CO_OK) {
            say(w, "stepping failed (%s): '%s' dropped", co_last_error(), s->id);
            slot_free(w, i);
        } else {
            s->cur_time = s->time_hdr[0] ? s->time_hdr : NULL;
            if (w->step_has[k]) publish_output(w, s, s->y, 1, seq);
            s->cur_time = NULL;
            s->last_seq = seq;
            s->since_ckpt++;
            w->frames++;
        }
    }
    return n;
}

static void checkpoint_due(worker *w, int all, uint64_t flags)
{
    int due = 0;
    for (int i = 0; i < w->opt.max_streams; i++)
        due |= w->slots[i].used && (all || w->slots[i].since_ckpt >= w->opt.checkpoint_every);
    if (!due || !outputs_settled(w)) return;
    for (int i = 0; i < w->opt.max_streams; i++) {
        served *s = &w->slots[i];
        if (s->used && (all || s->since_ckpt >= w->opt.checkpoint_every)) {
            if (flags & CKPT_FLAG_RELEASED) release(w, i);
            else checkpoint(w, i, flags);
        }
    }
}

static void print_stats(worker *w, const char *when)
{
    double t = now_ms(), dt = (t - w->stats_t0) / 1e3;
    say(w, "%s: streams %d, frames %llu (%.1f/s), outputs %llu (stored %llu, duplicates %llu), checkpoints %llu (mean %.2f ms, max %.2f ms), take-overs %llu, fenced %llu, lost %llu, ends %llu, bad frames %llu",
        when, w->n_owned, w->frames, dt > 0 ? (double)(w->frames - w->stats_frames0) / dt : 0.0, w->outputs,
        (unsigned long long)atomic_load(&w->published_ok), (unsigned long long)atomic_load(&w->duplicates), w->checkpoints,
        w->checkpoints ? w->ckpt_ms_sum / (double)w->checkpoints : 0.0, w->ckpt_ms_max, w->takeovers, w->fenced, w->lost, w->ends,
        w->bad_frames);
    w->stats_t0 = t;
    w->stats_frames0 = w->frames;
}

static int serve_loop(worker *w)
{
    const double renew_every = (double)w->opt.lease_ms / RENEWALS_PER_LEASE, scan_every = (double)w->opt.lease_ms / SCANS_PER_LEASE;
    double next_renew = 0, next_scan = 0, next_stats = now_ms() + (double)w->opt.stats_ms;
    w->stats_t0 = now_ms();
    while (!g_stop) {
        double t = now_ms();
        if (t >= next_renew) {
            for (int i = 0; i < w->opt.max_streams; i++)
                if (w->slots[i].used) lease_renew(w, i);
            next_renew = t + renew_every;
        }
        if (t >= next_scan) {
            scan(w);
            next_scan = now_ms() + scan_every * (0.75 + 0.5 * (double)(w->rng % 1000) / 1000.0);
        }
        handle_publish_failures(w);
        int stepped = 0;
        for (int round = 0; round < w->opt.checkpoint_every && !g_stop; round++) {
            int n = step_round(w);
            if (!n) break;
            stepped += n;
        }
        checkpoint_due(w, 0, 0);
        if (w->opt.stats_ms && now_ms() >= next_stats) {
            print_stats(w, "stats");
            next_stats = now_ms() + (double)w->opt.stats_ms;
        }
        if (!stepped) {
            pthread_mutex_lock(&w->lock);
            if (!w->any_rung && !g_stop) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += IDLE_WAIT_MS * NS_PER_MS;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&w->wake, &w->lock, &ts);
            }
            w->any_rung = 0;
            pthread_mutex_unlock(&w->lock);
        }
    }
    /* graceful shutdown: everything stepped is checkpointed and released */
    checkpoint_due(w, 1, CKPT_FLAG_RELEASED);
    print_stats(w, "final");
    return 0;
}

/* ---- set-up and tear-down ---- */
static int connect_nats(worker *w)
{
    natsOptions *opts = NULL;
    char *urls = strdup(w->opt.nats_urls);
    const char *servers[16];
    int n = 0;
    for (char *tok = strtok(urls, ","); tok && n < 16; tok = strtok(NULL, ",")) servers[n++] = tok;
    natsStatus s = urls && n ? natsOptions_Create(&opts) : NATS_INVALID_ARG;
    if (s == NATS_OK) s = natsOptions_SetServers(opts, servers, n);
    if (s == NATS_OK) s = natsOptions_SetName(opts, w->opt.name);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, RECONNECT_WAIT_MS);
    if (s == NATS_OK) s = natsOptions_UseGlobalMessageDelivery(opts, true);
    if (s == NATS_OK) s = natsConnection_Connect(&w->nc, opts);
    natsOptions_Destroy(opts);
    free(urls);
    if (s != NATS_OK) return fail_nats(s, "cannot connect to NATS");
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = REQUEST_WAIT_MS;
    jo.PublishAsync.MaxPending = MAX_PENDING_PUBLISHES;
    jo.PublishAsync.AckHandler = on_publish_ack;
    jo.PublishAsync.AckHandlerClosure = w;
    if ((s = natsConnection_JetStream(&w->js, w->nc, &jo)) != NATS_OK) return fail_nats(s, "no JetStream context");
    return 0;
}

static int load_worker_model(worker *w)
{
    co_status st = co_model_load(w->opt.model_path, &w->model);
    if (st != CO_OK) return fail("cannot load '%s': %s: %s", w->opt.model_path, co_status_name(st), co_last_error());
    co_stream *probe = NULL;
    if ((st = co_stream_create(w->model, w->opt.batch, &probe)) != CO_OK)
        return fail("cannot stream '%s': %s: %s", w->opt.model_path, co_status_name(st), co_last_error());
    co_shape in, out;
    co_stream_input_shape(probe, &in);
    co_stream_output_shape(probe, &out);
    co_stream_free(probe);
    w->in_n = w->out_n = 1;
    for (int d = 0; d < in.ndim; d++) w->in_n *= in.dims[d];
    for (int d = 0; d < out.ndim; d++) w->out_n *= out.dims[d];
    w->out_rows = out.dims[0] * out.dims[1];
    w->out_spatial = w->out_n / w->out_rows;
    if ((st = co_multistream_create(w->model, w->opt.max_streams, w->opt.batch, NULL, &w->multi)) != CO_OK)
        return fail("cannot create the multi-stream context: %s: %s", co_status_name(st), co_last_error());
    const size_t n = (size_t)w->opt.max_streams;
    w->slots = calloc(n, sizeof *w->slots);
    w->step_streams = calloc(n, sizeof *w->step_streams);
    w->step_x = calloc(n, sizeof *w->step_x);
    w->step_y = calloc(n, sizeof *w->step_y);
    w->step_has = calloc(n, sizeof *w->step_has);
    w->step_slot = calloc(n, sizeof *w->step_slot);
    w->step_seq = calloc(n, sizeof *w->step_seq);
    if (!w->slots || !w->step_streams || !w->step_x || !w->step_y || !w->step_has || !w->step_slot || !w->step_seq)
        return fail("out of memory");
    return 0;
}

static void worker_free(worker *w)
{
    for (int i = 0; w->slots && i < w->opt.max_streams; i++)
        if (w->slots[i].used) slot_free(w, i);
    if (w->nc) natsConnection_Close(w->nc); /* no callback runs after this */
    kvStore_Destroy(w->leases);
    kvStore_Destroy(w->ckpt);
    jsCtx_Destroy(w->js);
    natsConnection_Destroy(w->nc);
    free(w->slots);
    free(w->step_streams);
    free(w->step_x);
    free(w->step_y);
    free(w->step_has);
    free(w->step_slot);
    free(w->get_buf);
    free(w->step_seq);
    free(w->ckpt_buf);
    co_multistream_free(w->multi);
    co_model_free(w->model);
    nats_Close();
}

int co_cli_serve(int argc, char **argv)
{
    static worker w; /* one per process; the client's callbacks reach it through g_worker */
    memset(&w, 0, sizeof w);
    int rc = parse_serve_options(argc, argv, &w.opt);
    if (rc) return rc;
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.wake, NULL);
    atomic_init(&w.duplicates, 0);
    atomic_init(&w.published_ok, 0);
    w.rng = (unsigned)getpid() * 2654435761u;
    g_worker = &w;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    rc = load_worker_model(&w);
    if (!rc) rc = connect_nats(&w);
    if (!rc) rc = setup_nats(&w);
    if (!rc && w.opt.setup_only) {
        fprintf(stderr, "continual serve: streams %s, %s and buckets %s, %s ready (replicas %ld)\n", w.in_stream, w.out_stream,
                w.lease_bucket, w.ckpt_bucket, w.opt.replicas);
    } else if (!rc) {
        say(&w, "continual %s serving %s on %s (prefix %s, max %d streams, checkpoint every %ld frames, lease %ld ms)",
            co_version_string(), w.opt.model_path, w.opt.nats_urls, w.opt.prefix, w.opt.max_streams, w.opt.checkpoint_every,
            w.opt.lease_ms);
        rc = serve_loop(&w);
    }
    worker_free(&w);
    pthread_cond_destroy(&w.wake);
    pthread_mutex_destroy(&w.lock);
    return rc;
}
