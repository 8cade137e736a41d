/*
 * test_gst.c — the GStreamer element `continualfilter` against the C API.
 *
 * Each case runs a real pipeline
 *     videotestsrc/audiotestsrc ! caps ! tee ! queue ! continualfilter ! appsink name=out
 *                                        tee ! queue ! appsink name=raw
 * so that `raw` receives exactly the buffers the filter received. The test converts those
 * buffers itself, as docs/gstreamer.md specifies (layout, channel order, S16 scaling,
 * normalisation), steps them with co_forward_step on its own stream, and takes the whole
 * expected sequence (with the end padding the element flushes at EOS) from co_forward_steps over
 * the same frames as one clip. The element's buffers must equal it bit for bit, carry the
 * documented timestamps and caps, and the element must answer a LATENCY query with
 * delay x frame duration.
 *
 *     test_gst DEMO.safetensors GRAY.safetensors STEREO.safetensors MONO.safetensors
 * (GST_PLUGIN_PATH names the folder of libgstcontinual.so.)
 */
#include <continual.h>

#include <gst/app/gstappsink.h>
#include <gst/audio/audio.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S16_FULL_SCALE 32768.0f /* docs/gstreamer.md: an S16LE sample s is read as s / 32768 */
#define MAX_CHANNELS 8
#define PIPELINE_TIMEOUT (60 * GST_SECOND)

static int failures;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                       \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fprintf(stderr, "\n");                                                                                     \
            failures++;                                                                                                \
            return;                                                                                                    \
        }                                                                                                              \
    } while (0)

typedef struct norm {
    float scale;
    float mean[MAX_CHANNELS];
    float std[MAX_CHANNELS];
    const char *mean_text; /* as given to the element */
    const char *std_text;
    const char *scale_text;
} norm;

typedef struct frames {
    float *x;            /* frames (T, B, C, *S), one after the other */
    GstClockTime *pts;   /* per frame */
    int64_t t;
    size_t frame_floats;
} frames;

typedef struct outputs {
    GArray *data;          /* float */
    GArray *pts;           /* GstClockTime */
    GstCaps *caps;         /* of the first buffer */
    int64_t count;
} outputs;

typedef struct run_result {
    outputs out;
    GList *raw; /* GstSample*, what the filter received */
    GstClockTime latency_min;
    gboolean latency_ok;
} run_result;

static float normalise(const norm *n, float v, int c)
{
    return (v * n->scale - n->mean[c]) / n->std[c];
}

/* Plays `description` to EOS (or error), then takes everything both appsinks hold. */
static int run_pipeline(const char *description, run_result *r)
{
    GError *err = NULL;
    GstElement *pipeline = gst_parse_launch(description, &err);
    if (pipeline == NULL) {
        fprintf(stderr, "pipeline: %s\n", err ? err->message : "?");
        g_clear_error(&err);
        return 0;
    }
    memset(r, 0, sizeof *r);
    r->out.data = g_array_new(FALSE, FALSE, sizeof(float));
    r->out.pts = g_array_new(FALSE, FALSE, sizeof(GstClockTime));
    GstElement *out = gst_bin_get_by_name(GST_BIN(pipeline), "out");
    GstElement *raw = gst_bin_get_by_name(GST_BIN(pipeline), "raw");
    GstElement *filter = gst_bin_get_by_name(GST_BIN(pipeline), "f");
    gst_element_set_state(pipeline, GST_STATE_PLAYING);
    GstBus *bus = gst_element_get_bus(pipeline);
    GstMessage *msg = gst_bus_timed_pop_filtered(bus, PIPELINE_TIMEOUT, GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
    int ok = msg && GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS;
    if (msg && GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
        gst_message_parse_error(msg, &err, NULL);
        fprintf(stderr, "pipeline error: %s\n", err->message);
        g_clear_error(&err);
    } else if (!msg) {
        fprintf(stderr, "pipeline: no EOS within the timeout\n");
    }
    if (msg)
        gst_message_unref(msg);
    if (ok) {
        GstPad *src = gst_element_get_static_pad(filter, "src");
        GstQuery *q = gst_query_new_latency();
        if (gst_pad_query(src, q)) {
            gboolean live;
            GstClockTime max;
            gst_query_parse_latency(q, &live, &r->latency_min, &max);
            r->latency_ok = TRUE;
        }
        gst_query_unref(q);
        gst_object_unref(src);
        GstSample *s;
        while ((s = gst_app_sink_try_pull_sample(GST_APP_SINK(out), 0)) != NULL) {
            GstBuffer *buf = gst_sample_get_buffer(s);
            GstMapInfo map;
            gst_buffer_map(buf, &map, GST_MAP_READ);
            g_array_append_vals(r->out.data, map.data, (guint)(map.size / sizeof(float)));
            gst_buffer_unmap(buf, &map);
            GstClockTime pts = GST_BUFFER_PTS(buf);
            g_array_append_val(r->out.pts, pts);
            if (r->out.caps == NULL)
                r->out.caps = gst_caps_ref(gst_sample_get_caps(s));
            r->out.count++;
            gst_sample_unref(s);
        }
        while ((s = gst_app_sink_try_pull_sample(GST_APP_SINK(raw), 0)) != NULL)
            r->raw = g_list_append(r->raw, s);
    }
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(bus);
    gst_object_unref(out);
    gst_object_unref(raw);
    gst_object_unref(filter);
    gst_object_unref(pipeline);
    return ok;
}

static void free_result(run_result *r)
{
    g_array_free(r->out.data, TRUE);
    g_array_free(r->out.pts, TRUE);
    if (r->out.caps)
        gst_caps_unref(r->out.caps);
    g_list_free_full(r->raw, (GDestroyNotify)gst_sample_unref);
}

/* Video buffers -> frames (B, C, H, W): RGB byte 0, 1, 2 are R, G, B; BGR's are B, G, R (the
 * model gets R, G, B); GRAY8 one channel; sequence b is rows [b H, (b + 1) H). */
static void video_frames(GList *raw, const co_shape *frame_shape, int batch, const norm *n, frames *f)
{
    const int C = (int)frame_shape->dims[0], H = (int)frame_shape->dims[1], W = (int)frame_shape->dims[2];
    f->frame_floats = (size_t)batch * C * H * W;
    f->t = g_list_length(raw);
    f->x = g_new(float, f->frame_floats * (size_t)f->t);
    f->pts = g_new(GstClockTime, f->t);
    int64_t t = 0;
    for (GList *l = raw; l; l = l->next, t++) {
        GstSample *s = l->data;
        GstVideoInfo info;
        gst_video_info_from_caps(&info, gst_sample_get_caps(s));
        const gboolean bgr = GST_VIDEO_INFO_FORMAT(&info) == GST_VIDEO_FORMAT_BGR;
        const int stride = GST_VIDEO_INFO_PLANE_STRIDE(&info, 0);
        GstBuffer *buf = gst_sample_get_buffer(s);
        GstMapInfo map;
        gst_buffer_map(buf, &map, GST_MAP_READ);
        float *x = f->x + (size_t)t * f->frame_floats;
        for (int b = 0; b < batch; b++)
            for (int c = 0; c < C; c++)
                for (int h = 0; h < H; h++)
                    for (int w = 0; w < W; w++) {
                        int byte = C == 1 ? 0 : (bgr ? 2 - c : c);
                        guint8 v = map.data[(size_t)(b * H + h) * stride + (size_t)w * C + byte];
                        x[(((size_t)b * C + c) * H + h) * W + w] = normalise(n, (float)v, c);
                    }
        gst_buffer_unmap(buf, &map);
        f->pts[t] = GST_BUFFER_PTS(buf);
    }
}

/* Audio buffers -> frames (B, C, N): samples interleaved, channel b C + c; frame k is samples
 * [k N, (k + 1) N) of the concatenation (a partial last frame is dropped); its pts is that of the
 * buffer holding its first sample plus the offset there. */
static void audio_frames(GList *raw, const co_shape *frame_shape, int batch, const norm *n, frames *f)
{
    const int C = (int)frame_shape->dims[0];
    const int N = frame_shape->ndim == 2 ? (int)frame_shape->dims[1] : 1;
    GstAudioInfo info;
    gst_audio_info_from_caps(&info, gst_sample_get_caps(raw->data));
    const int all = C * batch, bps = GST_AUDIO_INFO_BPS(&info), rate = GST_AUDIO_INFO_RATE(&info);
    const gboolean s16 = GST_AUDIO_INFO_FORMAT(&info) == GST_AUDIO_FORMAT_S16LE;
    GArray *samples = g_array_new(FALSE, FALSE, sizeof(float)); /* (samples, all) */
    GArray *start_pts = g_array_new(FALSE, FALSE, sizeof(GstClockTime));
    GArray *start_sample = g_array_new(FALSE, FALSE, sizeof(gint64));
    gint64 total = 0;
    for (GList *l = raw; l; l = l->next) {
        GstBuffer *buf = gst_sample_get_buffer(l->data);
        GstMapInfo map;
        gst_buffer_map(buf, &map, GST_MAP_READ);
        gint64 count = (gint64)(map.size / (size_t)(bps * all));
        for (gint64 i = 0; i < count * all; i++) {
            float v;
            if (s16) {
                gint16 s;
                memcpy(&s, map.data + i * bps, sizeof s);
                v = (float)s / S16_FULL_SCALE;
            } else {
                memcpy(&v, map.data + i * bps, sizeof v);
            }
            g_array_append_val(samples, v);
        }
        gst_buffer_unmap(buf, &map);
        GstClockTime pts = GST_BUFFER_PTS(buf);
        g_array_append_val(start_pts, pts);
        g_array_append_val(start_sample, total);
        total += count;
    }
    f->frame_floats = (size_t)all * N;
    f->t = total / N;
    f->x = g_new(float, f->frame_floats * (size_t)f->t);
    f->pts = g_new(GstClockTime, f->t);
    const float *v = (const float *)samples->data;
    guint which = 0;
    for (int64_t k = 0; k < f->t; k++) {
        float *x = f->x + (size_t)k * f->frame_floats;
        for (int s = 0; s < N; s++)
            for (int ch = 0; ch < all; ch++)
                x[(size_t)ch * N + s] = normalise(n, v[(size_t)(k * N + s) * all + ch], ch % C);
        gint64 first = k * N;
        while (which + 1 < start_sample->len && g_array_index(start_sample, gint64, which + 1) <= first)
            which++;
        f->pts[k] = g_array_index(start_pts, GstClockTime, which) +
                    gst_util_uint64_scale_int((guint64)(first - g_array_index(start_sample, gint64, which)), GST_SECOND,
                                              rate);
    }
    g_array_free(samples, TRUE);
    g_array_free(start_pts, TRUE);
    g_array_free(start_sample, TRUE);
}

/* What the element must push for these frames: every output co_forward_step gives, at the pts of
 * the frame `delay` frames before the one that completed it, then (pad_end) the tail, each
 * `stride` frame durations after the previous output. The values are checked against
 * co_forward_steps over the frames as one clip (B, C, T, *S). */
static void check_outputs(const char *what, const char *model_path, int batch, const frames *f, gboolean pad_end,
                          GstClockTime frame_duration, const run_result *r, const char *expected_dims,
                          int expected_fps_n, int expected_fps_d)
{
    co_model *model = NULL;
    co_stream *stream = NULL, *clip_stream = NULL;
    CHECK(co_model_load(model_path, &model) == CO_OK, "%s: load: %s", what, co_last_error());
    CHECK(co_stream_create(model, batch, &stream) == CO_OK, "%s: stream: %s", what, co_last_error());
    CHECK(co_stream_create(model, batch, &clip_stream) == CO_OK, "%s: stream: %s", what, co_last_error());
    co_temporal temporal;
    co_model_temporal(model, &temporal);
    co_shape out_shape;
    co_stream_output_shape(stream, &out_shape);
    size_t y_floats = 1;
    for (int i = 0; i < out_shape.ndim; i++)
        y_floats *= (size_t)out_shape.dims[i];
    const int64_t delay = temporal.delay > 0 ? temporal.delay : 0;

    /* step by step */
    GArray *step_y = g_array_new(FALSE, FALSE, sizeof(float));
    GArray *step_pts = g_array_new(FALSE, FALSE, sizeof(GstClockTime));
    float *y = g_new(float, y_floats);
    for (int64_t t = 0; t < f->t; t++) {
        int has = 0;
        CHECK(co_forward_step(stream, f->x + (size_t)t * f->frame_floats, y, &has, CO_UPDATE_STATE) == CO_OK, "%s: step", what);
        if (has) {
            g_array_append_vals(step_y, y, (guint)y_floats);
            GstClockTime pts = f->pts[t >= delay ? t - delay : 0];
            g_array_append_val(step_pts, pts);
        }
    }
    /* the whole clip, (B, C, T, *S), with or without the end padding */
    co_shape in_shape;
    co_stream_input_shape(clip_stream, &in_shape);
    const size_t bc = (size_t)in_shape.dims[0] * (size_t)in_shape.dims[1];
    const size_t slice = f->frame_floats / bc;
    float *clip = g_new(float, f->frame_floats * (size_t)(f->t ? f->t : 1));
    for (int64_t t = 0; t < f->t; t++)
        for (size_t r0 = 0; r0 < bc; r0++)
            memcpy(clip + (r0 * (size_t)f->t + (size_t)t) * slice, f->x + (size_t)t * f->frame_floats + r0 * slice,
                   slice * sizeof(float));
    int64_t max_out = co_steps_max_output(clip_stream, f->t, pad_end);
    float *clip_y = g_new(float, y_floats * (size_t)(max_out > 0 ? max_out : 1));
    int64_t t_out = 0;
    CHECK(co_forward_steps(clip_stream, clip, f->t, clip_y, max_out, &t_out, pad_end, CO_UPDATE_STATE) == CO_OK,
          "%s: forward_steps: %s", what, co_last_error());
    const size_t out_bc = (size_t)out_shape.dims[0] * (size_t)out_shape.dims[1];
    const size_t out_slice = y_floats / out_bc;
    float *expected = g_new(float, y_floats * (size_t)(t_out ? t_out : 1));
    for (int64_t j = 0; j < t_out; j++)
        for (size_t r0 = 0; r0 < out_bc; r0++)
            memcpy(expected + (size_t)j * y_floats + r0 * out_slice, clip_y + (r0 * (size_t)t_out + (size_t)j) * out_slice,
                   out_slice * sizeof(float));
    const int64_t n_step = (int64_t)(step_y->len / y_floats);
    CHECK(n_step <= t_out, "%s: %" G_GINT64_FORMAT " step outputs > %" G_GINT64_FORMAT " clip outputs", what, n_step,
          t_out);
    CHECK(memcmp(step_y->data, expected, (size_t)n_step * y_floats * sizeof(float)) == 0,
          "%s: co_forward_step differs from co_forward_steps", what);
    if (!pad_end)
        CHECK(n_step == t_out, "%s: without pad_end, %" G_GINT64_FORMAT " != %" G_GINT64_FORMAT, what, n_step, t_out);

    /* the element */
    fprintf(stderr, "%s: %" G_GINT64_FORMAT " frames in, %" G_GINT64_FORMAT " outputs (%" G_GINT64_FORMAT " stepped + %" G_GINT64_FORMAT
                    " at EOS), element pushed %" G_GINT64_FORMAT "\n",
            what, f->t, t_out, n_step, t_out - n_step, r->out.count);
    CHECK(t_out > 0, "%s: the case gives no output at all", what);
    CHECK(r->out.count == t_out, "%s: %" G_GINT64_FORMAT " buffers, expected %" G_GINT64_FORMAT, what, r->out.count, t_out);
    CHECK(r->out.data->len == (guint)((size_t)t_out * y_floats), "%s: %u floats, expected %zu", what, r->out.data->len,
          (size_t)t_out * y_floats);
    CHECK(memcmp(r->out.data->data, expected, (size_t)t_out * y_floats * sizeof(float)) == 0,
          "%s: the element's outputs differ from the C API's", what);
    const GstClockTime step = frame_duration * (guint64)(temporal.stride > 0 ? temporal.stride : 1);
    for (int64_t j = 0; j < t_out; j++) {
        GstClockTime want = j < n_step ? g_array_index(step_pts, GstClockTime, j)
                                       : (j == 0 ? f->pts[0] : g_array_index(r->out.pts, GstClockTime, j - 1) + step);
        GstClockTime got = g_array_index(r->out.pts, GstClockTime, j);
        CHECK(got == want, "%s: output %" G_GINT64_FORMAT " pts %" GST_TIME_FORMAT ", expected %" GST_TIME_FORMAT, what, j,
              GST_TIME_ARGS(got), GST_TIME_ARGS(want));
    }
    /* caps */
    GstStructure *st = gst_caps_get_structure(r->out.caps, 0);
    CHECK(gst_structure_has_name(st, "other/tensors"), "%s: caps %s", what, gst_structure_get_name(st));
    CHECK(g_strcmp0(gst_structure_get_string(st, "dimensions"), expected_dims) == 0, "%s: dimensions %s, expected %s", what,
          gst_structure_get_string(st, "dimensions"), expected_dims);
    CHECK(g_strcmp0(gst_structure_get_string(st, "types"), "float32") == 0, "%s: types", what);
    int fps_n = -1, fps_d = -1;
    CHECK(gst_structure_get_fraction(st, "framerate", &fps_n, &fps_d) && fps_n == expected_fps_n &&
              fps_d == expected_fps_d,
          "%s: framerate %d/%d, expected %d/%d", what, fps_n, fps_d, expected_fps_n, expected_fps_d);
    /* latency: delay x frame duration over a source of none */
    CHECK(r->latency_ok && r->latency_min == frame_duration * (guint64)delay,
          "%s: latency %" GST_TIME_FORMAT ", expected %" GST_TIME_FORMAT, what, GST_TIME_ARGS(r->latency_min),
          GST_TIME_ARGS(frame_duration * (guint64)delay));

    g_free(expected);
    g_free(clip_y);
    g_free(clip);
    g_free(y);
    g_array_free(step_y, TRUE);
    g_array_free(step_pts, TRUE);
    co_stream_free(clip_stream);
    co_stream_free(stream);
    co_model_free(model);
}

static void frame_shape_of(const char *path, co_shape *fs)
{
    co_model *m = NULL;
    fs->ndim = 0;
    if (co_model_load(path, &m) == CO_OK)
        co_model_frame_shape(m, fs);
    co_model_free(m);
}

#define FILTER_FMT "continualfilter name=f model=\"%s\" batch=%d mean=\"%s\" std=\"%s\" scale=%s pad-end=%s threads=%d"

/* The element's `threads` in the cases that follow (the outputs must not depend on it). */
static int case_threads = 1;

static void video_case(const char *what, const char *model, const char *format, int batch, const norm *n, int buffers,
                       gboolean pad_end, const char *dims, int fps_n, int fps_d)
{
    co_shape fs;
    frame_shape_of(model, &fs);
    CHECK(fs.ndim == 3, "%s: model frame shape", what);
    gchar *desc = g_strdup_printf(
        "videotestsrc num-buffers=%d pattern=snow ! video/x-raw,format=%s,width=%d,height=%d,framerate=25/1 ! tee name=t "
        "t. ! queue ! " FILTER_FMT " ! appsink name=out sync=false wait-on-eos=false  t. ! queue ! appsink name=raw sync=false wait-on-eos=false",
        buffers, format, (int)fs.dims[2], (int)(fs.dims[1] * batch), model, batch, n->mean_text, n->std_text,
        n->scale_text, pad_end ? "true" : "false", case_threads);
    run_result r;
    int ok = run_pipeline(desc, &r);
    g_free(desc);
    CHECK(ok, "%s: the pipeline did not reach EOS", what);
    frames f;
    video_frames(r.raw, &fs, batch, n, &f);
    check_outputs(what, model, batch, &f, pad_end, GST_SECOND / 25, &r, dims, fps_n, fps_d);
    g_free(f.x);
    g_free(f.pts);
    free_result(&r);
}

static void audio_case(const char *what, const char *model, const char *format, int batch, const norm *n, int buffers,
                       int samples_per_buffer, int rate, gboolean pad_end, const char *dims, int fps_n, int fps_d)
{
    co_shape fs;
    frame_shape_of(model, &fs);
    CHECK(fs.ndim == 1 || fs.ndim == 2, "%s: model frame shape", what);
    const int samples_per_frame = fs.ndim == 2 ? (int)fs.dims[1] : 1;
    gchar *desc = g_strdup_printf(
        "audiotestsrc num-buffers=%d samplesperbuffer=%d wave=white-noise ! "
        "audio/x-raw,format=%s,channels=%d,rate=%d,layout=interleaved ! tee name=t "
        "t. ! queue ! " FILTER_FMT " ! appsink name=out sync=false wait-on-eos=false  t. ! queue ! appsink name=raw sync=false wait-on-eos=false",
        buffers, samples_per_buffer, format, (int)fs.dims[0] * batch, rate, model, batch, n->mean_text, n->std_text,
        n->scale_text, pad_end ? "true" : "false", case_threads);
    run_result r;
    int ok = run_pipeline(desc, &r);
    g_free(desc);
    CHECK(ok, "%s: the pipeline did not reach EOS", what);
    frames f;
    audio_frames(r.raw, &fs, batch, n, &f);
    check_outputs(what, model, batch, &f, pad_end, gst_util_uint64_scale_int(GST_SECOND, samples_per_frame, rate), &r,
                  dims, fps_n, fps_d);
    g_free(f.x);
    g_free(f.pts);
    free_result(&r);
}

/* A pipeline that must fail: an ERROR on the bus (no EOS first) whose message contains `expected`. */
static void error_case(const char *what, const char *description, const char *expected)
{
    GError *err = NULL;
    GstElement *pipeline = gst_parse_launch(description, &err);
    CHECK(pipeline != NULL, "%s: pipeline: %s", what, err ? err->message : "?");
    gst_element_set_state(pipeline, GST_STATE_PLAYING);
    GstBus *bus = gst_element_get_bus(pipeline);
    GstMessage *msg = gst_bus_timed_pop_filtered(bus, PIPELINE_TIMEOUT, GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
    gchar *text = NULL;
    if (msg && GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
        gst_message_parse_error(msg, &err, NULL);
        text = g_strdup(err->message);
        g_clear_error(&err);
    }
    if (msg)
        gst_message_unref(msg);
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(bus);
    gst_object_unref(pipeline);
    fprintf(stderr, "%s: %s\n", what, text ? text : "(no error)");
    gboolean found = text && strstr(text, expected) != NULL;
    g_free(text);
    CHECK(found, "%s: expected an error containing \"%s\"", what, expected);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s DEMO GRAY STEREO MONO (model files)\n", argv[0]);
        return 2;
    }
    gst_init(NULL, NULL);
    const char *demo = argv[1], *gray = argv[2], *stereo = argv[3], *mono = argv[4];
    const norm none = {1.0f, {0}, {1, 1, 1, 1, 1, 1, 1, 1}, "", "", "1"};
    const norm imagenet = {1.0f / 255.0f, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f},
                           "0.485,0.456,0.406", "0.229,0.224,0.225", "0.00392156862745098"};
    const norm one_value = {2.0f, {0.25f, 0.25f}, {0.5f, 0.5f}, "0.25", "0.5", "2"};

    /* demo: frame (3, 12, 12), delay 3, stride 2 -> output (1, 4, 12, 12) at 25/2 fps */
    video_case("video RGB", demo, "RGB", 1, &imagenet, 20, TRUE, "12:12:4:1", 25, 2);
    video_case("video BGR", demo, "BGR", 1, &imagenet, 17, TRUE, "12:12:4:1", 25, 2);
    video_case("video RGB, no pad-end", demo, "RGB", 1, &none, 20, FALSE, "12:12:4:1", 25, 2);
    /* gray: frame (1, 8, 10) (rows padded to 12 bytes), delay 2; batch 2 stacked -> 10 x 16 */
    video_case("video GRAY8 batch 2", gray, "GRAY8", 2, &none, 9, TRUE, "10:8:2:2", 25, 1);
    /* stereo: frame (2, 16), stride 2; 37 samples per buffer, so frames straddle buffers */
    audio_case("audio S16LE stereo", stereo, "S16LE", 1, &one_value, 12, 37, 16000, TRUE, "12:3:1", 500, 1);
    audio_case("audio F32LE stereo", stereo, "F32LE", 1, &none, 7, 50, 16000, TRUE, "12:3:1", 500, 1);
    /* mono: frame (1,), one sample per frame, batch 2 = 2 channels */
    audio_case("audio F32LE mono batch 2", mono, "F32LE", 2, &none, 3, 20, 8000, TRUE, "2:2", 8000, 1);
    audio_case("audio S16LE mono, no pad-end", mono, "S16LE", 1, &one_value, 2, 25, 8000, FALSE, "2:1", 8000, 1);
    /* intra-step threads: the same frames as stepping on one thread */
    case_threads = 2;
    video_case("video RGB, 2 threads", demo, "RGB", 1, &imagenet, 20, TRUE, "12:12:4:1", 25, 2);
    audio_case("audio S16LE stereo, 2 threads", stereo, "S16LE", 1, &one_value, 12, 37, 16000, TRUE, "12:3:1", 500, 1);
    case_threads = 1;

    /* errors: messages on the bus, no crash */
    gchar *desc;
    desc = g_strdup_printf("videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=10,height=12 ! "
                           "continualfilter model=\"%s\" ! fakesink", demo);
    error_case("wrong frame size", desc, "which expects video/x-raw, width=(int)12, height=(int)12");
    g_free(desc);
    desc = g_strdup_printf("videotestsrc num-buffers=2 ! video/x-raw,format=GRAY8,width=12,height=12 ! "
                           "continualfilter model=\"%s\" ! fakesink", demo);
    error_case("GRAY8 into an RGB model", desc, "format=(string){ RGB, BGR }");
    g_free(desc);
    desc = g_strdup_printf("audiotestsrc num-buffers=2 ! audio/x-raw,format=S16LE,channels=1 ! "
                           "continualfilter model=\"%s\" ! fakesink", stereo);
    error_case("mono into a stereo model", desc, "channels=(int)2");
    g_free(desc);
    desc = g_strdup_printf("audiotestsrc num-buffers=2 ! continualfilter model=\"%s\" ! fakesink", demo);
    error_case("audio into a video model", desc, "which expects video/x-raw");
    g_free(desc);
    error_case("bad model path",
               "videotestsrc num-buffers=2 ! continualfilter model=/nonexistent/model.safetensors ! fakesink",
               "could not load the model /nonexistent/model.safetensors: CO_ERR_IO");
    error_case("no model", "videotestsrc num-buffers=2 ! continualfilter ! fakesink", "no model");

    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    fprintf(stderr, "all GStreamer cases passed\n");
    return 0;
}
