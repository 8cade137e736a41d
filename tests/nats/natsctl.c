/*
 * natsctl.c — the test publisher and collector of `continual serve` (tests/nats/cluster_test.sh,
 * tests/nats/bench.sh), over libnats. Not installed.
 *
 *   natsctl publish MODEL --nats URLS --prefix P --streams N --frames T --dir DIR [--seed S] [--rate-hz R]
 *       N streams "s00".."s<N-1>" of T frames each (deterministic pseudo-random floats in [-1, 1]
 *       of the model's input frame), round-robin, R rounds per second (0: as fast as acknowledged),
 *       then an end message each. Each frame is published synchronously with the message id
 *       "<id>:<t>" (a retry is de-duplicated) and written to DIR/<id>.in.f32 for the reference run.
 *   natsctl collect --nats URLS --prefix P --streams N --dir DIR [--timeout-s S]
 *       reads every output of <P>_OUT from the start until each stream's end marker: writes
 *       DIR/<id>.out.f32 (frames in Co-Index order) and checks each index 0..Co-Count-1 arrived
 *       exactly once (a duplicate or a gap fails); prints frame-to-output latency (input's
 *       Co-Time to the output's storage time) p50 / p99 / max and the outputs' time span; every
 *       output stored (id, index, input seq, worker, storage ms, latency ms) goes to DIR/outputs.tsv.
 *   natsctl history --nats URLS --prefix P --streams N
 *       every stored revision of each stream's checkpoint, one line each.
 * Exit status: 0 ok, 1 failure, 2 usage.
 */
#define _POSIX_C_SOURCE 200809L
#include <continual.h>
#include <errno.h>
#include <nats/nats.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_STREAMS 1000
#define MAX_SERVERS 16
#define PUBLISH_WAIT_MS 3000
#define PUBLISH_GIVE_UP_NS (60LL * 1000000000LL) /* a cluster outage (leader elections) lasts seconds */
#define NEXT_WAIT_MS 1000

typedef struct args {
    const char *model, *urls, *prefix, *dir;
    long streams, frames, seed, rate_hz, timeout_s;
} args;

static int usage(void)
{
    fputs("usage: natsctl publish MODEL --nats URLS --prefix P --streams N --frames T --dir DIR [--seed S] [--rate-hz R]\n"
          "       natsctl collect --nats URLS --prefix P --streams N --dir DIR [--timeout-s S]\n",
          stderr);
    return 2;
}

static long long unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ns(long long ns)
{
    if (ns <= 0) return;
    struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    nanosleep(&ts, NULL);
}

static int parse(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->urls = "nats://127.0.0.1:4222";
    a->prefix = "co";
    a->seed = 1;
    a->timeout_s = 120;
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i];
        if (k[0] != '-') {
            a->model = k;
            continue;
        }
        if (i + 1 >= argc) return -1;
        const char *v = argv[++i];
        char *end = NULL;
        long n = strtol(v, &end, 10);
        int numeric = end != v && *end == 0;
        if (strcmp(k, "--nats") == 0) a->urls = v;
        else if (strcmp(k, "--prefix") == 0) a->prefix = v;
        else if (strcmp(k, "--dir") == 0) a->dir = v;
        else if (numeric && n >= 0 && strcmp(k, "--streams") == 0 && n <= MAX_STREAMS) a->streams = n;
        else if (numeric && n >= 0 && strcmp(k, "--frames") == 0) a->frames = n;
        else if (numeric && strcmp(k, "--seed") == 0) a->seed = n;
        else if (numeric && n >= 0 && strcmp(k, "--rate-hz") == 0) a->rate_hz = n;
        else if (numeric && n > 0 && strcmp(k, "--timeout-s") == 0) a->timeout_s = n;
        else return -1;
    }
    return (a->dir || strcmp(argv[1], "history") == 0) && a->streams > 0 ? 0 : -1;
}

static int ctl_connect(const args *a, natsConnection **nc, jsCtx **js)
{
    char *urls = strdup(a->urls);
    const char *servers[MAX_SERVERS];
    int n = 0;
    for (char *t = strtok(urls, ","); t && n < MAX_SERVERS; t = strtok(NULL, ",")) servers[n++] = t;
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK) s = natsOptions_SetServers(o, servers, n);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 100);
    if (s == NATS_OK) s = natsConnection_Connect(nc, o);
    natsOptions_Destroy(o);
    free(urls);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = PUBLISH_WAIT_MS;
    if (s == NATS_OK) s = natsConnection_JetStream(js, *nc, &jo);
    if (s != NATS_OK) fprintf(stderr, "natsctl: cannot connect: %s\n", natsStatus_GetText(s));
    return s == NATS_OK ? 0 : 1;
}

static void stream_id(char *buf, size_t n, long i) { snprintf(buf, n, "s%02ld", i); }

/* Publishes until JetStream acknowledges (a retry carries the same id, so it is stored once). */
static int publish_sure(jsCtx *js, const char *subj, const void *data, int len, const char *msg_id)
{
    char stamp[32];
    snprintf(stamp, sizeof stamp, "%lld", unix_ns());
    const long long give_up = unix_ns() + PUBLISH_GIVE_UP_NS;
    while (unix_ns() < give_up) {
        natsMsg *m = NULL;
        natsStatus s = natsMsg_Create(&m, subj, NULL, data, len);
        if (s == NATS_OK) s = natsMsgHeader_Set(m, "Co-Time", stamp);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = msg_id;
        jsPubAck *ack = NULL;
        if (s == NATS_OK) s = js_PublishMsg(&ack, js, m, &po, NULL);
        jsPubAck_Destroy(ack);
        natsMsg_Destroy(m);
        if (s == NATS_OK) return 0;
        sleep_ns(100 * 1000000LL);
    }
    fprintf(stderr, "natsctl: cannot publish %s to %s\n", msg_id, subj);
    return 1;
}

static int cmd_publish(const args *a)
{
    co_model *m = NULL;
    co_stream *s = NULL;
    if (!a->model || co_model_load(a->model, &m) != CO_OK || co_stream_create(m, 1, &s) != CO_OK) {
        fprintf(stderr, "natsctl: cannot load the model: %s\n", co_last_error());
        return 1;
    }
    co_shape in;
    co_stream_input_shape(s, &in);
    int64_t fn = 1;
    for (int d = 0; d < in.ndim; d++) fn *= in.dims[d];
    co_stream_free(s);
    co_model_free(m);
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    if (ctl_connect(a, &nc, &js)) return 1;
    float *frame = malloc((size_t)fn * sizeof *frame);
    FILE **files = calloc((size_t)a->streams, sizeof *files);
    uint64_t *rng = calloc((size_t)a->streams, sizeof *rng);
    int rc = frame && files && rng ? 0 : 1;
    char id[32], subj[128], path[4096], msg_id[64];
    for (long i = 0; !rc && i < a->streams; i++) {
        stream_id(id, sizeof id, i);
        snprintf(path, sizeof path, "%s/%s.in.f32", a->dir, id);
        if (!(files[i] = fopen(path, "wb"))) rc = 1;
        rng[i] = (uint64_t)a->seed * 0x9E3779B97F4A7C15ull + (uint64_t)i * 0xBF58476D1CE4E5B9ull + 1;
    }
    const long long round_ns = a->rate_hz ? 1000000000LL / a->rate_hz : 0;
    long long next = unix_ns();
    for (long t = 0; !rc && t <= a->frames; t++) {
        for (long i = 0; !rc && i < a->streams; i++) {
            stream_id(id, sizeof id, i);
            snprintf(subj, sizeof subj, "%s.in.%s", a->prefix, id);
            if (t == a->frames) { /* the end of the sequence */
                snprintf(msg_id, sizeof msg_id, "%s:end", id);
                rc = publish_sure(js, subj, NULL, 0, msg_id);
                continue;
            }
            for (int64_t k = 0; k < fn; k++) {
                rng[i] = rng[i] * 6364136223846793005ull + 1442695040888963407ull;
                frame[k] = (float)((double)(rng[i] >> 40) / (double)(1ull << 23) - 1.0);
            }
            if (fwrite(frame, sizeof *frame, (size_t)fn, files[i]) != (size_t)fn) rc = 1;
            snprintf(msg_id, sizeof msg_id, "%s:%ld", id, t);
            if (!rc) rc = publish_sure(js, subj, frame, (int)(fn * (int64_t)sizeof *frame), msg_id);
        }
        next += round_ns;
        if (round_ns) sleep_ns(next - unix_ns());
    }
    for (long i = 0; files && i < a->streams; i++)
        if (files[i] && fclose(files[i])) rc = 1;
    fprintf(stderr, "natsctl: published %ld streams x %ld frames (+ end)%s\n", a->streams, a->frames, rc ? ": FAILED" : "");
    free(frame);
    free(files);
    free(rng);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return rc;
}

typedef struct out_frame { uint64_t index, seq; long long latency_ns, stored_ns; float *data; int len; char worker[64]; } out_frame;

typedef struct collected {
    out_frame *f;
    int n, cap;
    long long count; /* Co-Count of the end marker, -1 before it */
} collected;

static int cmp_index(const void *x, const void *y)
{
    const out_frame *a = x, *b = y;
    return a->index < b->index ? -1 : a->index > b->index;
}

static int cmp_ll(const void *x, const void *y)
{
    long long a = *(const long long *)x, b = *(const long long *)y;
    return a < b ? -1 : a > b;
}

static int cmd_collect(const args *a)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    if (ctl_connect(a, &nc, &js)) return 1;
    collected *c = calloc((size_t)a->streams, sizeof *c);
    for (long i = 0; i < a->streams; i++) c[i].count = -1;
    char subj[128], id[32];
    snprintf(subj, sizeof subj, "%s.out.>", a->prefix);
    const size_t prefix_len = strlen(a->prefix) + 5;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Ordered = true;
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    const long long deadline = unix_ns() + (long long)a->timeout_s * 1000000000LL;
    natsStatus s;
    while ((s = js_SubscribeSync(&sub, js, subj, NULL, &so, &jerr)) != NATS_OK && unix_ns() < deadline)
        sleep_ns(200 * 1000000LL); /* the cluster may still be electing leaders */
    if (s != NATS_OK) {
        fprintf(stderr, "natsctl: cannot subscribe to %s: %s\n", subj, natsStatus_GetText(s));
        return 1;
    }
    long ended = 0, unknown = 0;
    while (ended < a->streams && unix_ns() < deadline) {
        natsMsg *m = NULL;
        if (natsSubscription_NextMsg(&m, sub, NEXT_WAIT_MS) != NATS_OK) continue;
        const char *sid = natsMsg_GetSubject(m) + prefix_len;
        long i = sid[0] == 's' ? strtol(sid + 1, NULL, 10) : -1;
        const char *v = NULL;
        if (i < 0 || i >= a->streams) {
            unknown++;
        } else if (natsMsgHeader_Get(m, "Co-End", &v) == NATS_OK) {
            if (natsMsgHeader_Get(m, "Co-Count", &v) == NATS_OK && c[i].count < 0) {
                c[i].count = strtoll(v, NULL, 10);
                ended++;
            }
        } else if (natsMsgHeader_Get(m, "Co-Index", &v) == NATS_OK) {
            collected *ci = &c[i];
            if (ci->n == ci->cap) {
                ci->cap = ci->cap ? 2 * ci->cap : 64;
                ci->f = realloc(ci->f, (size_t)ci->cap * sizeof *ci->f);
            }
            out_frame *f = &ci->f[ci->n++];
            f->index = strtoull(v, NULL, 10);
            f->len = natsMsg_GetDataLength(m);
            f->data = malloc((size_t)f->len + 1);
            memcpy(f->data, natsMsg_GetData(m), (size_t)f->len);
            jsMsgMetaData *meta = NULL; /* a consumer's message: the storage time is in its metadata */
            f->stored_ns = natsMsg_GetMetaData(&meta, m) == NATS_OK ? meta->Timestamp : 0;
            jsMsgMetaData_Destroy(meta);
            f->seq = natsMsgHeader_Get(m, "Co-Seq", &v) == NATS_OK ? strtoull(v, NULL, 10) : 0;
            snprintf(f->worker, sizeof f->worker, "%s", natsMsgHeader_Get(m, "Co-Worker", &v) == NATS_OK ? v : "?");
            f->latency_ns = f->stored_ns && natsMsgHeader_Get(m, "Co-Time", &v) == NATS_OK ? f->stored_ns - strtoll(v, NULL, 10) : -1;
        }
        natsMsg_Destroy(m);
    }
    natsSubscription_Destroy(sub);
    long long dups = 0, gaps = 0, total = 0, first_ns = 0, last_ns = 0;
    long long *lat = NULL;
    long n_lat = 0;
    int rc = ended == a->streams ? 0 : 1;
    char tsv_path[4096];
    snprintf(tsv_path, sizeof tsv_path, "%s/outputs.tsv", a->dir);
    FILE *tsv = fopen(tsv_path, "w"); /* every output stored: who stored it, when (fencing checks) */
    if (rc) fprintf(stderr, "natsctl: only %ld of %ld streams ended before the timeout\n", ended, a->streams);
    for (long i = 0; i < a->streams; i++) {
        collected *ci = &c[i];
        qsort(ci->f, (size_t)ci->n, sizeof *ci->f, cmp_index);
        long long d = 0, g = 0;
        for (int k = 1; k < ci->n; k++) d += ci->f[k].index == ci->f[k - 1].index;
        long long distinct = ci->n - d;
        if (ci->count >= 0) g = ci->count - distinct;
        if (ci->n && ci->f[ci->n - 1].index + 1 != (uint64_t)distinct) g += 1;
        dups += d;
        gaps += g;
        total += ci->n;
        stream_id(id, sizeof id, i);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.out.f32", a->dir, id);
        FILE *fp = fopen(path, "wb");
        lat = realloc(lat, (size_t)(n_lat + ci->n + 1) * sizeof *lat);
        for (int k = 0; k < ci->n; k++) {
            if (tsv)
                fprintf(tsv, "%s\t%llu\t%llu\t%s\t%lld\t%.3f\n", id, (unsigned long long)ci->f[k].index,
                        (unsigned long long)ci->f[k].seq, ci->f[k].worker, ci->f[k].stored_ns / 1000000,
                        (double)ci->f[k].latency_ns * 1e-6);
            if (k && ci->f[k].index == ci->f[k - 1].index) continue;
            if (fp) fwrite(ci->f[k].data, 1, (size_t)ci->f[k].len, fp);
            if (ci->f[k].latency_ns >= 0) lat[n_lat++] = ci->f[k].latency_ns;
            if (!first_ns || ci->f[k].stored_ns < first_ns) first_ns = ci->f[k].stored_ns;
            if (ci->f[k].stored_ns > last_ns) last_ns = ci->f[k].stored_ns;
        }
        if (fp) fclose(fp);
        if (d || g) fprintf(stderr, "natsctl: %s: %d outputs, end count %lld: %lld duplicates, %lld missing\n", id, ci->n, ci->count, d, g);
        for (int k = 0; k < ci->n; k++) free(ci->f[k].data);
        free(ci->f);
    }
    if (tsv) fclose(tsv);
    qsort(lat, (size_t)n_lat, sizeof *lat, cmp_ll);
    const double ms = 1e-6;
    printf("collect: %ld streams, %lld outputs, %lld duplicates, %lld missing, %ld foreign\n", ended, total, dups, gaps, unknown);
    if (n_lat)
        printf("collect: frame-to-output latency p50 %.2f ms, p99 %.2f ms, max %.2f ms; outputs stored over %.3f s\n",
               (double)lat[n_lat / 2] * ms, (double)lat[(long)((double)(n_lat - 1) * 0.99)] * ms, (double)lat[n_lat - 1] * ms,
               (double)(last_ns - first_ns) * 1e-9);
    free(lat);
    free(c);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return rc || dups || gaps ? 1 : 0;
}

/* Every stored revision of every stream's checkpoint (the bucket keeps --checkpoint-history of
 * them): "id rev owner flags last_seq out_index created_ms", from the record layout of
 * docs/serve.md (magic, then little-endian u64 last_seq, out_index, eos_count, flags, state_len,
 * then the owner's name in 64 bytes). */
static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int cmd_history(const args *a)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    if (ctl_connect(a, &nc, &js)) return 1;
    char bucket[128], id[32];
    snprintf(bucket, sizeof bucket, "%s_ckpt", a->prefix);
    kvStore *kv = NULL;
    if (js_KeyValue(&kv, js, bucket) != NATS_OK) {
        fprintf(stderr, "natsctl: no bucket %s\n", bucket);
        return 1;
    }
    int rc = 0;
    for (long i = 0; i < a->streams; i++) {
        stream_id(id, sizeof id, i);
        kvEntryList list = {0};
        if (kvStore_History(&list, kv, id, NULL) != NATS_OK) {
            rc = 1;
            continue;
        }
        for (int k = 0; k < list.Count; k++) {
            const unsigned char *p = kvEntry_Value(list.Entries[k]);
            int n = kvEntry_ValueLen(list.Entries[k]);
            if (n < 8 + 40 + 64 || memcmp(p, "COSRV001", 8) != 0) {
                rc = 1;
                continue;
            }
            char owner[65];
            memcpy(owner, p + 48, 64);
            owner[64] = 0;
            printf("%s\t%llu\t%s\t%llu\t%llu\t%llu\t%lld\n", id, (unsigned long long)kvEntry_Revision(list.Entries[k]), owner,
                   (unsigned long long)le64(p + 32), (unsigned long long)le64(p + 8), (unsigned long long)le64(p + 16),
                   (long long)(kvEntry_Created(list.Entries[k]) / 1000000));
        }
        kvEntryList_Destroy(&list);
    }
    kvStore_Destroy(kv);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return rc;
}

int main(int argc, char **argv)
{
    args a;
    if (argc < 2 || parse(argc, argv, &a)) return usage();
    int rc = strcmp(argv[1], "publish") == 0   ? cmd_publish(&a)
             : strcmp(argv[1], "collect") == 0 ? cmd_collect(&a)
             : strcmp(argv[1], "history") == 0 ? cmd_history(&a)
                                               : usage();
    nats_Close();
    return rc;
}
