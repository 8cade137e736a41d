/*
 * gstcontinualfilter.c — the GStreamer element `continualfilter` (plugin "continual").
 *
 * Streams a continual-c model over live media: every video buffer, or every run of samples
 * the model's frame shape implies, becomes one input frame (B, C, *S); each output frame that
 * appears is pushed downstream as a buffer of float32 (caps `other/tensors`). EOS flushes the
 * model's end padding (co_stream_finish) before it is forwarded. The element, its caps and its
 * timestamps are specified in docs/gstreamer.md; this file follows that text.
 *
 * A GstElement with its own pads rather than a GstBaseTransform: one input buffer gives zero,
 * one (video) or several (audio) outputs, and EOS gives the tail, which a chain function and an
 * event function say directly.
 */
#include <continual.h>

#include <gst/audio/audio.h>
#include <gst/base/gstadapter.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* GST_PLUGIN_DEFINE reads the source package's name from PACKAGE */
#define PACKAGE "continual-c"
#define CO_GST_ORIGIN "continual-c"

/* Property limits. A batch is that many sequences side by side in one buffer (docs/gstreamer.md);
 * open_model also checks that batch x height (video) or batch x channels (audio) fits the gint of
 * the caps. */
#define CO_GST_MAX_BATCH 4096
#define CO_GST_MAX_THREADS CO_MAX_THREADS
#define CO_GST_DEFAULT_BATCH 1
#define CO_GST_DEFAULT_THREADS 1
#define CO_GST_DEFAULT_PAD_END TRUE
#define CO_GST_DEFAULT_SCALE 1.0

/* A video frame (C, H, W) has C = 3 (RGB / BGR) or C = 1 (GRAY8). */
#define CO_GST_RGB_CHANNELS 3
#define CO_GST_GRAY_CHANNELS 1
/* S16LE samples are read as v = s / 32768, the range audioconvert maps to F32 [-1, 1). */
#define CO_GST_S16_FULL_SCALE 32768.0f

GST_DEBUG_CATEGORY_STATIC(co_gst_debug);
#define GST_CAT_DEFAULT co_gst_debug

typedef enum co_gst_media {
    CO_GST_MEDIA_VIDEO, /* frame (C, H, W), C in {1, 3} */
    CO_GST_MEDIA_AUDIO  /* frame (C) or (C, N): C channels, N samples per frame (1 for (C)) */
} co_gst_media;

#define GST_TYPE_CONTINUAL_FILTER (gst_continual_filter_get_type())
G_DECLARE_FINAL_TYPE(GstContinualFilter, gst_continual_filter, GST, CONTINUAL_FILTER, GstElement)

struct _GstContinualFilter {
    GstElement parent;
    GstPad *sinkpad;
    GstPad *srcpad;

    /* properties (GST_OBJECT_LOCK) */
    gchar *model_path;
    gint batch;
    gint threads;
    gboolean pad_end;
    gchar *mean_text;
    gchar *std_text;
    gdouble scale;

    /* from READY on: the model, its stream and what the frame shape implies */
    co_model *model;
    co_stream *stream;
    co_temporal temporal;
    co_shape frame_shape;  /* (C, *S) from the file */
    co_shape output_shape; /* (B, C', *S') */
    co_gst_media media;
    gint channels;          /* C of the model */
    gint frame_height;      /* video: H of the model (one sequence); the buffer holds batch x H rows */
    gint frame_width;       /* video: W */
    gint samples_per_frame; /* audio: N */
    float *x;               /* one input frame (B, C, *S) */
    float *y;               /* one output frame (B, C', *S') */
    size_t x_floats;
    size_t y_floats;
    float *mean;             /* per model channel */
    float *std;              /* per model channel */
    float scale_f;
    GstCaps *model_caps;     /* the sink caps this model takes */
    GstClockTime *frame_pts; /* pts of the last (delay + 1) input frames, by frame index */
    gint64 pts_ring_len;

    /* from the CAPS event on (streaming thread) */
    gboolean negotiated;
    gboolean caps_refused; /* the error for caps the model cannot take is posted once */
    GstVideoInfo video_info;
    GstAudioInfo audio_info;
    GstAdapter *adapter;         /* audio: samples not yet a whole frame */
    GstClockTime frame_duration; /* from the caps; GST_CLOCK_TIME_NONE when the rate is variable */
    gint out_fps_n, out_fps_d;

    /* per sequence (reset at READY, FLUSH_STOP, and after EOS) */
    gint64 frames_in;            /* input frames stepped */
    gint64 frames_out;           /* output buffers pushed */
    GstClockTime last_out_pts;   /* pts of the last output pushed, GST_CLOCK_TIME_NONE if none */
    GstClockTime first_in_pts;   /* pts of the first input frame */
};

G_DEFINE_TYPE(GstContinualFilter, gst_continual_filter, GST_TYPE_ELEMENT)

enum {
    PROP_0,
    PROP_MODEL,
    PROP_BATCH,
    PROP_THREADS,
    PROP_PAD_END,
    PROP_MEAN,
    PROP_STD,
    PROP_SCALE
};

#define CO_GST_SINK_CAPS                                                                           \
    "video/x-raw, format = (string) { RGB, BGR, GRAY8 }, width = (int) [ 1, MAX ], "               \
    "height = (int) [ 1, MAX ], framerate = (fraction) [ 0/1, MAX ]; "                             \
    "audio/x-raw, format = (string) { F32LE, S16LE }, layout = (string) interleaved, "             \
    "rate = (int) [ 1, MAX ], channels = (int) [ 1, MAX ]"
#define CO_GST_TENSOR_CAPS_NAME "other/tensors"
#define CO_GST_SRC_CAPS                                                                            \
    CO_GST_TENSOR_CAPS_NAME ", format = (string) static, num_tensors = (int) 1, "                 \
    "types = (string) float32, framerate = (fraction) [ 0/1, MAX ]"

static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(CO_GST_SINK_CAPS));
static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(CO_GST_SRC_CAPS));

static size_t shape_elements(const co_shape *shape, int first_dim)
{
    size_t n = 1;
    for (int i = first_dim; i < shape->ndim; i++)
        n *= (size_t)shape->dims[i];
    return n;
}

/* "(1, 3, 12, 12)" into buf. */
static void shape_text(const co_shape *shape, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < shape->ndim && used < size; i++)
        used += (size_t)g_snprintf(buf + used, size - used, "%s%" G_GINT64_FORMAT, i ? ", " : "(",
                                   shape->dims[i]);
    if (used < size)
        g_snprintf(buf + used, size - used, ")");
}

/* Parses "v" or "v0,v1,..." (one value per model channel) into out[channels]; NULL or "" gives
 * `fallback` everywhere. FALSE with a message in *why on anything else. */
static gboolean parse_channel_values(const gchar *text, const char *what, gint channels, float fallback,
                                     float *out, gchar **why)
{
    if (text == NULL || text[0] == '\0') {
        for (gint c = 0; c < channels; c++)
            out[c] = fallback;
        return TRUE;
    }
    gchar **items = g_strsplit(text, ",", -1);
    guint n = g_strv_length(items);
    gboolean ok = (n == 1 || n == (guint)channels);
    for (guint i = 0; ok && i < n; i++) {
        gchar *end = NULL;
        errno = 0;
        double v = g_ascii_strtod(items[i], &end);
        while (end && g_ascii_isspace(*end))
            end++;
        if (end == items[i] || (end && *end != '\0') || errno == ERANGE || !isfinite(v))
            ok = FALSE;
        else
            out[i] = (float)v;
    }
    if (ok && n == 1)
        for (gint c = 1; c < channels; c++)
            out[c] = out[0];
    if (!ok)
        *why = g_strdup_printf("%s=\"%s\": expected one number or %d comma-separated numbers (one per model channel)",
                               what, text, channels);
    g_strfreev(items);
    return ok;
}

static void release_model(GstContinualFilter *self)
{
    co_stream_free(self->stream);
    self->stream = NULL;
    co_model_free(self->model);
    self->model = NULL;
    g_clear_pointer(&self->x, g_free);
    g_clear_pointer(&self->y, g_free);
    g_clear_pointer(&self->mean, g_free);
    g_clear_pointer(&self->std, g_free);
    g_clear_pointer(&self->frame_pts, g_free);
    gst_clear_caps(&self->model_caps);
    self->negotiated = FALSE;
}

static void reset_sequence(GstContinualFilter *self)
{
    self->frames_in = 0;
    self->frames_out = 0;
    self->last_out_pts = GST_CLOCK_TIME_NONE;
    self->first_in_pts = GST_CLOCK_TIME_NONE;
    if (self->adapter)
        gst_adapter_clear(self->adapter);
}

/* The sink caps a model of frame (C, *S) takes with `batch` sequences side by side. */
static GstCaps *caps_for_model(const GstContinualFilter *self)
{
    if (self->media == CO_GST_MEDIA_VIDEO) {
        GstCaps *caps = gst_caps_new_simple("video/x-raw", "width", G_TYPE_INT, self->frame_width, "height",
                                            G_TYPE_INT, self->frame_height * self->batch, "framerate",
                                            GST_TYPE_FRACTION_RANGE, 0, 1, G_MAXINT, 1, NULL);
        GValue formats = G_VALUE_INIT;
        gst_value_list_init(&formats, 2);
        const char *names[2] = {"RGB", "BGR"};
        int n_names = self->channels == CO_GST_RGB_CHANNELS ? 2 : 1;
        if (self->channels == CO_GST_GRAY_CHANNELS)
            names[0] = "GRAY8";
        for (int i = 0; i < n_names; i++) {
            GValue v = G_VALUE_INIT;
            g_value_init(&v, G_TYPE_STRING);
            g_value_set_string(&v, names[i]);
            gst_value_list_append_and_take_value(&formats, &v);
        }
        gst_caps_set_value(caps, "format", &formats);
        g_value_unset(&formats);
        return caps;
    }
    GstCaps *caps = gst_caps_from_string("audio/x-raw, format = (string) { F32LE, S16LE }, "
                                         "layout = (string) interleaved, rate = (int) [ 1, MAX ]");
    gst_caps_set_simple(caps, "channels", G_TYPE_INT, self->channels * self->batch, NULL);
    return caps;
}

/* NULL -> READY: load the model, make its stream and everything the frame shape implies. */
static gboolean open_model(GstContinualFilter *self)
{
    GST_OBJECT_LOCK(self);
    gchar *path = g_strdup(self->model_path);
    gchar *mean_text = g_strdup(self->mean_text);
    gchar *std_text = g_strdup(self->std_text);
    gint batch = self->batch;
    gint threads = self->threads;
    self->scale_f = (float)self->scale;
    GST_OBJECT_UNLOCK(self);

    gboolean ok = FALSE;
    gchar *why = NULL;
    co_status st;
    char shape_buf[128];
    if (path == NULL || path[0] == '\0') {
        GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND, ("no model: set the property model=FILE.safetensors"), (NULL));
        goto done;
    }
    if ((st = co_model_load(path, &self->model)) != CO_OK) {
        GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("could not load the model %s: %s: %s", path, co_status_name(st),
                                                      co_last_error()),
                          (NULL));
        goto done;
    }
    if ((st = co_model_frame_shape(self->model, &self->frame_shape)) != CO_OK) {
        GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("the model %s: %s: %s", path, co_status_name(st), co_last_error()),
                          (NULL));
        goto done;
    }
    co_model_temporal(self->model, &self->temporal);
    const co_shape *fs = &self->frame_shape;
    shape_text(fs, shape_buf, sizeof shape_buf);
    if (fs->ndim == 3 && (fs->dims[0] == CO_GST_RGB_CHANNELS || fs->dims[0] == CO_GST_GRAY_CHANNELS) &&
        fs->dims[1] * batch <= G_MAXINT && fs->dims[2] <= G_MAXINT) {
        self->media = CO_GST_MEDIA_VIDEO;
        self->frame_height = (gint)fs->dims[1];
        self->frame_width = (gint)fs->dims[2];
        self->samples_per_frame = 0;
    } else if ((fs->ndim == 1 || fs->ndim == 2) && fs->dims[0] * batch <= G_MAXINT &&
               (fs->ndim == 1 || fs->dims[1] <= G_MAXINT)) {
        self->media = CO_GST_MEDIA_AUDIO;
        self->samples_per_frame = fs->ndim == 2 ? (gint)fs->dims[1] : 1;
    } else {
        GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                          ("the model %s takes frames %s: neither video (3 or 1, H, W) nor audio (C) or (C, N)", path,
                           shape_buf),
                          (NULL));
        goto done;
    }
    self->channels = (gint)fs->dims[0];
    if ((st = co_stream_create(self->model, batch, &self->stream)) != CO_OK) {
        GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("the model %s, batch %d: %s: %s", path, batch, co_status_name(st),
                                                     co_last_error()),
                          (NULL));
        goto done;
    }
    if ((st = co_stream_set_threads(self->stream, threads)) != CO_OK) {
        GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                          ("threads=%d: %s: %s", threads, co_status_name(st), co_last_error()), (NULL));
        goto done;
    }
    co_shape input_shape;
    co_stream_input_shape(self->stream, &input_shape);
    co_stream_output_shape(self->stream, &self->output_shape);
    self->x_floats = shape_elements(&input_shape, 0);
    self->y_floats = shape_elements(&self->output_shape, 0);
    self->x = g_new0(float, self->x_floats);
    self->y = g_new0(float, self->y_floats);
    self->mean = g_new(float, self->channels);
    self->std = g_new(float, self->channels);
    if (!parse_channel_values(mean_text, "mean", self->channels, 0.0f, self->mean, &why) ||
        !parse_channel_values(std_text, "std", self->channels, 1.0f, self->std, &why)) {
        GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("%s", why), (NULL));
        goto done;
    }
    for (gint c = 0; c < self->channels; c++)
        if (self->std[c] == 0.0f) {
            GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("std of channel %d is 0", c), (NULL));
            goto done;
        }
    /* Output k lags its input frame by `delay` frames: keep the pts of the last delay + 1. */
    self->pts_ring_len = (self->temporal.delay > 0 ? self->temporal.delay : 0) + 1;
    self->frame_pts = g_new(GstClockTime, self->pts_ring_len);
    self->model_caps = caps_for_model(self);
    GST_INFO_OBJECT(self, "model %s: frame %s, delay %" G_GINT64_FORMAT ", stride %" G_GINT64_FORMAT ", sink caps %" GST_PTR_FORMAT,
                    path, shape_buf, self->temporal.delay, self->temporal.stride, self->model_caps);
    reset_sequence(self);
    ok = TRUE;
done:
    if (!ok)
        release_model(self);
    g_free(why);
    g_free(path);
    g_free(mean_text);
    g_free(std_text);
    return ok;
}

static GstCaps *output_caps(const GstContinualFilter *self)
{
    GString *dims = g_string_new(NULL);
    /* innermost dimension first, as NNStreamer's other/tensors "dimensions" */
    for (int i = self->output_shape.ndim - 1; i >= 0; i--)
        g_string_append_printf(dims, "%" G_GINT64_FORMAT "%s", self->output_shape.dims[i], i ? ":" : "");
    GstCaps *caps = gst_caps_new_simple(CO_GST_TENSOR_CAPS_NAME, "format", G_TYPE_STRING, "static", "num_tensors",
                                        G_TYPE_INT, 1, "dimensions", G_TYPE_STRING, dims->str, "types", G_TYPE_STRING,
                                        "float32", "framerate", GST_TYPE_FRACTION, self->out_fps_n, self->out_fps_d,
                                        NULL);
    g_string_free(dims, TRUE);
    return caps;
}

static gboolean set_sink_caps(GstContinualFilter *self, GstCaps *caps)
{
    if (self->model_caps == NULL)
        return FALSE;
    if (!gst_caps_can_intersect(caps, self->model_caps)) {
        self->negotiated = FALSE;
        if (self->caps_refused) /* the same sticky caps again, before each later event or buffer */
            return FALSE;
        self->caps_refused = TRUE;
        gchar *expected = gst_caps_to_string(self->model_caps);
        gchar *got = gst_caps_to_string(caps);
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION,
                          ("not-negotiated: the caps %s do not fit the model, which expects %s", got, expected), (NULL));
        g_free(expected);
        g_free(got);
        return FALSE;
    }
    gint fps_n = 0, fps_d = 1;
    gint64 stride = self->temporal.stride > 0 ? self->temporal.stride : 1;
    if (self->media == CO_GST_MEDIA_VIDEO) {
        if (!gst_video_info_from_caps(&self->video_info, caps))
            return FALSE;
        fps_n = GST_VIDEO_INFO_FPS_N(&self->video_info);
        fps_d = GST_VIDEO_INFO_FPS_D(&self->video_info);
        self->frame_duration = fps_n > 0 ? gst_util_uint64_scale_int(GST_SECOND, fps_d, fps_n) : GST_CLOCK_TIME_NONE;
    } else {
        if (!gst_audio_info_from_caps(&self->audio_info, caps))
            return FALSE;
        gint rate = GST_AUDIO_INFO_RATE(&self->audio_info);
        /* frames per second: rate / N */
        gst_util_fraction_multiply(rate, 1, 1, self->samples_per_frame, &fps_n, &fps_d);
        self->frame_duration = gst_util_uint64_scale_int(GST_SECOND, self->samples_per_frame, rate);
        if (self->adapter == NULL)
            self->adapter = gst_adapter_new();
        gst_adapter_clear(self->adapter);
    }
    if (fps_n > 0 && stride <= G_MAXINT)
        gst_util_fraction_multiply(fps_n, fps_d, 1, (gint)stride, &self->out_fps_n, &self->out_fps_d);
    else {
        self->out_fps_n = 0;
        self->out_fps_d = 1;
    }
    GstCaps *out = output_caps(self);
    gboolean pushed = gst_pad_push_event(self->srcpad, gst_event_new_caps(out));
    gst_caps_unref(out);
    self->negotiated = TRUE;
    self->caps_refused = FALSE;
    return pushed;
}

static void post_step_error(GstContinualFilter *self, co_status st, const char *call)
{
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("%s: %s: %s", call, co_status_name(st), co_last_error()), (NULL));
}

static GstFlowReturn push_output(GstContinualFilter *self, const float *frame, GstClockTime pts)
{
    gsize bytes = self->y_floats * sizeof(float);
    GstBuffer *buf = gst_buffer_new_allocate(NULL, bytes, NULL);
    if (buf == NULL) {
        GST_ELEMENT_ERROR(self, RESOURCE, FAILED, ("could not allocate an output buffer of %" G_GSIZE_FORMAT " bytes", bytes),
                          (NULL));
        return GST_FLOW_ERROR;
    }
    gst_buffer_fill(buf, 0, frame, bytes);
    GST_BUFFER_PTS(buf) = pts;
    GST_BUFFER_DTS(buf) = pts;
    gint64 stride = self->temporal.stride > 0 ? self->temporal.stride : 1;
    GST_BUFFER_DURATION(buf) = GST_CLOCK_TIME_IS_VALID(self->frame_duration) ? self->frame_duration * (guint64)stride
                                                                              : GST_CLOCK_TIME_NONE;
    GST_BUFFER_OFFSET(buf) = (guint64)self->frames_out;
    self->frames_out++;
    self->last_out_pts = pts;
    return gst_pad_push(self->srcpad, buf);
}

/* Steps self->x (filled by the caller) as input frame `frames_in` with timestamp `pts`. */
static GstFlowReturn step_frame(GstContinualFilter *self, GstClockTime pts)
{
    gint64 n = self->frames_in;
    self->frame_pts[n % self->pts_ring_len] = pts;
    if (n == 0)
        self->first_in_pts = pts;
    int has_output = 0;
    co_status st = co_forward_step(self->stream, self->x, self->y, &has_output, CO_UPDATE_STATE);
    if (st != CO_OK) {
        post_step_error(self, st, "co_forward_step");
        return GST_FLOW_ERROR;
    }
    self->frames_in++;
    if (!has_output)
        return GST_FLOW_OK;
    /* the output completed by frame n belongs to frame n - delay (docs/gstreamer.md) */
    gint64 lag = self->pts_ring_len - 1;
    gint64 source = n >= lag ? n - lag : 0;
    return push_output(self, self->y, self->frame_pts[source % self->pts_ring_len]);
}

/* x = (v * scale - mean[c]) / std[c], the one normalisation of both media. */
static inline float normalise(const GstContinualFilter *self, float v, gint c)
{
    return (v * self->scale_f - self->mean[c]) / self->std[c];
}

static void convert_video(GstContinualFilter *self, const GstVideoFrame *frame)
{
    const gint C = self->channels, H = self->frame_height, W = self->frame_width;
    for (gint b = 0; b < self->batch; b++)
        for (gint c = 0; c < C; c++) {
            /* component c is R, G, B (RGB and BGR alike: the format says where each lies) or Y */
            const guint8 *plane = GST_VIDEO_FRAME_COMP_DATA(frame, c);
            const gint row_stride = GST_VIDEO_FRAME_COMP_STRIDE(frame, c);
            const gint pixel_stride = GST_VIDEO_FRAME_COMP_PSTRIDE(frame, c);
            float *out = self->x + ((size_t)b * C + c) * H * W;
            for (gint h = 0; h < H; h++) {
                const guint8 *row = plane + (size_t)(b * H + h) * row_stride;
                for (gint w = 0; w < W; w++)
                    out[(size_t)h * W + w] = normalise(self, (float)row[(size_t)w * pixel_stride], c);
            }
        }
}

/* One frame of N interleaved samples of batch x C channels (channel b * C + c) -> x (B, C, N). */
static void convert_audio(GstContinualFilter *self, const guint8 *data)
{
    const gint C = self->channels, N = self->samples_per_frame;
    const gint all_channels = C * self->batch;
    const gboolean s16 = GST_AUDIO_INFO_FORMAT(&self->audio_info) == GST_AUDIO_FORMAT_S16LE;
    const gint bps = GST_AUDIO_INFO_BPS(&self->audio_info);
    for (gint s = 0; s < N; s++)
        for (gint ch = 0; ch < all_channels; ch++) {
            const guint8 *p = data + ((size_t)s * all_channels + ch) * bps;
            float v = s16 ? (float)(gint16)GST_READ_UINT16_LE(p) / CO_GST_S16_FULL_SCALE : GST_READ_FLOAT_LE(p);
            self->x[(size_t)ch * N + s] = normalise(self, v, ch % C);
        }
}

static GstFlowReturn chain_video(GstContinualFilter *self, GstBuffer *buf)
{
    GstVideoFrame frame;
    if (!gst_video_frame_map(&frame, &self->video_info, buf, GST_MAP_READ)) {
        GST_ELEMENT_ERROR(self, STREAM, FAILED, ("could not map a video buffer"), (NULL));
        return GST_FLOW_ERROR;
    }
    convert_video(self, &frame);
    gst_video_frame_unmap(&frame);
    if (!GST_CLOCK_TIME_IS_VALID(self->frame_duration) && GST_BUFFER_DURATION_IS_VALID(buf))
        self->frame_duration = GST_BUFFER_DURATION(buf); /* variable frame rate: the buffers say */
    return step_frame(self, GST_BUFFER_PTS(buf));
}

static GstFlowReturn chain_audio(GstContinualFilter *self, GstBuffer *buf)
{
    const gint bpf = GST_AUDIO_INFO_BPF(&self->audio_info);
    const gsize frame_bytes = (gsize)bpf * (gsize)self->samples_per_frame;
    const gint rate = GST_AUDIO_INFO_RATE(&self->audio_info);
    gst_adapter_push(self->adapter, buf);
    GstFlowReturn ret = GST_FLOW_OK;
    while (ret == GST_FLOW_OK && gst_adapter_available(self->adapter) >= frame_bytes) {
        /* the frame's first sample: the pts of the buffer it came from plus its offset there */
        guint64 distance = 0;
        GstClockTime pts = gst_adapter_prev_pts(self->adapter, &distance);
        if (GST_CLOCK_TIME_IS_VALID(pts))
            pts += gst_util_uint64_scale_int(distance / (guint64)bpf, GST_SECOND, rate);
        const guint8 *data = gst_adapter_map(self->adapter, frame_bytes);
        convert_audio(self, data);
        gst_adapter_unmap(self->adapter);
        gst_adapter_flush(self->adapter, frame_bytes);
        ret = step_frame(self, pts);
    }
    return ret;
}

static GstFlowReturn gst_continual_filter_chain(GstPad *pad, GstObject *parent, GstBuffer *buf)
{
    GstContinualFilter *self = GST_CONTINUAL_FILTER(parent);
    if (!self->negotiated) {
        gst_buffer_unref(buf);
        if (!self->caps_refused)
            GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("not-negotiated: a buffer came before caps"), (NULL));
        return GST_FLOW_NOT_NEGOTIATED;
    }
    if (self->media == CO_GST_MEDIA_VIDEO) {
        GstFlowReturn ret = chain_video(self, buf);
        gst_buffer_unref(buf);
        return ret;
    }
    return chain_audio(self, buf); /* the adapter takes the buffer */
}

/* EOS: the end padding (co_stream_finish), each output frame of the tail pushed as a buffer. */
static GstFlowReturn finish_sequence(GstContinualFilter *self)
{
    GstFlowReturn ret = GST_FLOW_OK;
    GST_OBJECT_LOCK(self);
    gboolean pad_end = self->pad_end;
    GST_OBJECT_UNLOCK(self);
    if (!pad_end || self->frames_in == 0) {
        co_stream_clean(self->stream);
        reset_sequence(self);
        return ret;
    }
    int64_t max_frames = co_stream_finish_max_output(self->stream);
    float *tail = g_new(float, (size_t)(max_frames > 0 ? max_frames : 1) * self->y_floats);
    int64_t t_out = 0;
    co_status st = co_stream_finish(self->stream, tail, max_frames, &t_out);
    if (st != CO_OK) {
        post_step_error(self, st, "co_stream_finish");
        ret = GST_FLOW_ERROR;
    }
    /* the tail clip is (B, C', t_out, *S'): output j is every (b, c') block's j-th slice */
    const size_t rows = (size_t)self->output_shape.dims[0] * (size_t)self->output_shape.dims[1];
    const size_t slice = shape_elements(&self->output_shape, 2);
    const gint64 stride = self->temporal.stride > 0 ? self->temporal.stride : 1;
    for (int64_t j = 0; ret == GST_FLOW_OK && j < t_out; j++) {
        for (size_t r = 0; r < rows; r++)
            memcpy(self->y + r * slice, tail + (r * (size_t)t_out + (size_t)j) * slice, slice * sizeof(float));
        /* each tail output follows the previous output by `stride` frames; the first of a
         * sequence without any earlier output belongs to its first frame */
        GstClockTime pts = GST_CLOCK_TIME_NONE;
        GstClockTime step = GST_CLOCK_TIME_IS_VALID(self->frame_duration) ? self->frame_duration * (guint64)stride
                                                                           : GST_CLOCK_TIME_NONE;
        if (GST_CLOCK_TIME_IS_VALID(self->last_out_pts) && GST_CLOCK_TIME_IS_VALID(step))
            pts = self->last_out_pts + step;
        else if (self->frames_out == 0)
            pts = self->first_in_pts;
        ret = push_output(self, self->y, pts);
    }
    g_free(tail);
    reset_sequence(self); /* co_stream_finish left the stream clean */
    return ret;
}

static gboolean gst_continual_filter_sink_event(GstPad *pad, GstObject *parent, GstEvent *event)
{
    GstContinualFilter *self = GST_CONTINUAL_FILTER(parent);
    switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_CAPS: {
        GstCaps *caps;
        gst_event_parse_caps(event, &caps);
        gboolean ok = set_sink_caps(self, caps);
        gst_event_unref(event);
        return ok;
    }
    case GST_EVENT_EOS:
        if (!self->negotiated) {
            /* the stream already failed (no caps, an error posted): an EOS forwarded now would
             * let the sinks preroll on nothing after the error */
            gst_event_unref(event);
            return FALSE;
        }
        if (finish_sequence(self) == GST_FLOW_ERROR) {
            gst_event_unref(event);
            return FALSE;
        }
        return gst_pad_event_default(pad, parent, event);
    case GST_EVENT_FLUSH_STOP:
        if (self->stream) {
            co_stream_clean(self->stream);
            reset_sequence(self);
        }
        return gst_pad_event_default(pad, parent, event);
    default:
        return gst_pad_event_default(pad, parent, event);
    }
}

static gboolean gst_continual_filter_sink_query(GstPad *pad, GstObject *parent, GstQuery *query)
{
    GstContinualFilter *self = GST_CONTINUAL_FILTER(parent);
    switch (GST_QUERY_TYPE(query)) {
    case GST_QUERY_CAPS: {
        /* The model's caps, so that videoscale / audioconvert upstream produce them. When
         * upstream can offer none of them (its filter does not meet them), the answer is what it
         * offers within the template: it then sends those caps and the CAPS event fails with an
         * error naming the caps the model expects, rather than upstream's bare not-negotiated. */
        GstCaps *filter;
        gst_query_parse_caps(query, &filter);
        GstCaps *template_caps = gst_pad_get_pad_template_caps(pad);
        GstCaps *ours = self->model_caps ? gst_caps_ref(self->model_caps) : gst_caps_ref(template_caps);
        GstCaps *result = filter ? gst_caps_intersect_full(filter, ours, GST_CAPS_INTERSECT_FIRST) : gst_caps_ref(ours);
        if (filter && gst_caps_is_empty(result)) {
            gst_caps_unref(result);
            result = gst_caps_intersect_full(filter, template_caps, GST_CAPS_INTERSECT_FIRST);
        }
        gst_query_set_caps_result(query, result);
        gst_caps_unref(result);
        gst_caps_unref(ours);
        gst_caps_unref(template_caps);
        return TRUE;
    }
    case GST_QUERY_ACCEPT_CAPS: {
        /* within the template: the CAPS event checks them against the model and says why not */
        GstCaps *caps;
        gst_query_parse_accept_caps(query, &caps);
        GstCaps *template_caps = gst_pad_get_pad_template_caps(pad);
        gst_query_set_accept_caps_result(query, gst_caps_can_intersect(caps, template_caps));
        gst_caps_unref(template_caps);
        return TRUE;
    }
    default:
        return gst_pad_query_default(pad, parent, query);
    }
}

static gboolean gst_continual_filter_src_query(GstPad *pad, GstObject *parent, GstQuery *query)
{
    GstContinualFilter *self = GST_CONTINUAL_FILTER(parent);
    if (GST_QUERY_TYPE(query) != GST_QUERY_LATENCY)
        return gst_pad_query_default(pad, parent, query);
    if (!gst_pad_peer_query(self->sinkpad, query))
        return FALSE;
    gboolean live;
    GstClockTime min, max;
    gst_query_parse_latency(query, &live, &min, &max);
    /* an output appears `delay` frames after the frame it belongs to (docs/gstreamer.md) */
    GstClockTime ours = 0;
    if (self->temporal.delay > 0 && GST_CLOCK_TIME_IS_VALID(self->frame_duration))
        ours = self->frame_duration * (guint64)self->temporal.delay;
    min += ours;
    if (GST_CLOCK_TIME_IS_VALID(max))
        max += ours;
    gst_query_set_latency(query, live, min, max);
    return TRUE;
}

static GstStateChangeReturn gst_continual_filter_change_state(GstElement *element, GstStateChange transition)
{
    GstContinualFilter *self = GST_CONTINUAL_FILTER(element);
    if (transition == GST_STATE_CHANGE_NULL_TO_READY && !open_model(self))
        return GST_STATE_CHANGE_FAILURE;
    GstStateChangeReturn ret = GST_ELEMENT_CLASS(gst_continual_filter_parent_class)->change_state(element, transition);
    if (ret == GST_STATE_CHANGE_FAILURE)
        return ret;
    switch (transition) {
    case GST_STATE_CHANGE_PAUSED_TO_READY:
        if (self->stream)
            co_stream_clean(self->stream);
        reset_sequence(self);
        self->negotiated = FALSE;
        self->caps_refused = FALSE;
        break;
    case GST_STATE_CHANGE_READY_TO_NULL:
        release_model(self);
        g_clear_object(&self->adapter);
        break;
    default:
        break;
    }
    return ret;
}

static void gst_continual_filter_set_property(GObject *object, guint prop_id, const GValue *value, GParamSpec *pspec)
{
    GstContinualFilter *self = GST_CONTINUAL_FILTER(object);
    GST_OBJECT_LOCK(self);
    switch (prop_id) {
    case PROP_MODEL:
        g_free(self->model_path);
        self->model_path = g_value_dup_string(value);
        break;
    case PROP_BATCH:
        self->batch = g_value_get_int(value);
        break;
    case PROP_THREADS:
        self->threads = g_value_get_int(value);
        break;
    case PROP_PAD_END:
        self->pad_end = g_value_get_boolean(value);
        break;
    case PROP_MEAN:
        g_free(self->mean_text);
        self->mean_text = g_value_dup_string(value);
        break;
    case PROP_STD:
        g_free(self->std_text);
        self->std_text = g_value_dup_string(value);
        break;
    case PROP_SCALE:
        self->scale = g_value_get_double(value);
        break;
    default:
        G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
        break;
    }
    GST_OBJECT_UNLOCK(self);
}

static void gst_continual_filter_get_property(GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
    GstContinualFilter *self = GST_CONTINUAL_FILTER(object);
    GST_OBJECT_LOCK(self);
    switch (prop_id) {
    case PROP_MODEL:
        g_value_set_string(value, self->model_path);
        break;
    case PROP_BATCH:
        g_value_set_int(value, self->batch);
        break;
    case PROP_THREADS:
        g_value_set_int(value, self->threads);
        break;
    case PROP_PAD_END:
        g_value_set_boolean(value, self->pad_end);
        break;
    case PROP_MEAN:
        g_value_set_string(value, self->mean_text);
        break;
    case PROP_STD:
        g_value_set_string(value, self->std_text);
        break;
    case PROP_SCALE:
        g_value_set_double(value, self->scale);
        break;
    default:
        G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
        break;
    }
    GST_OBJECT_UNLOCK(self);
}

static void gst_continual_filter_finalize(GObject *object)
{
    GstContinualFilter *self = GST_CONTINUAL_FILTER(object);
    release_model(self);
    g_clear_object(&self->adapter);
    g_free(self->model_path);
    g_free(self->mean_text);
    g_free(self->std_text);
    G_OBJECT_CLASS(gst_continual_filter_parent_class)->finalize(object);
}

static void gst_continual_filter_class_init(GstContinualFilterClass *klass)
{
    GObjectClass *object_class = G_OBJECT_CLASS(klass);
    GstElementClass *element_class = GST_ELEMENT_CLASS(klass);
    object_class->set_property = gst_continual_filter_set_property;
    object_class->get_property = gst_continual_filter_get_property;
    object_class->finalize = gst_continual_filter_finalize;
    element_class->change_state = gst_continual_filter_change_state;

    /* read when the element goes from NULL to READY */
    const GParamFlags rw_ready = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS;
    g_object_class_install_property(object_class, PROP_MODEL,
                                    g_param_spec_string("model", "Model", "continual-c model file (.safetensors)", NULL,
                                                        rw_ready));
    g_object_class_install_property(object_class, PROP_BATCH,
                                    g_param_spec_int("batch", "Batch",
                                                     "Sequences side by side in one buffer (video: stacked vertically; "
                                                     "audio: channel groups)",
                                                     1, CO_GST_MAX_BATCH, CO_GST_DEFAULT_BATCH, rw_ready));
    g_object_class_install_property(object_class, PROP_THREADS,
                                    g_param_spec_int("threads", "Threads",
                                                     "Intra-step threads (1: the streaming thread only)", 1,
                                                     CO_GST_MAX_THREADS, CO_GST_DEFAULT_THREADS, rw_ready));
    g_object_class_install_property(object_class, PROP_PAD_END,
                                    g_param_spec_boolean("pad-end", "Pad end",
                                                         "At EOS, flush the model's end padding and push the outputs "
                                                         "it completes",
                                                         CO_GST_DEFAULT_PAD_END,
                                                         G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                                                             GST_PARAM_MUTABLE_PLAYING));
    g_object_class_install_property(object_class, PROP_MEAN,
                                    g_param_spec_string("mean", "Mean",
                                                        "Subtracted after scaling: one number or one per model channel, "
                                                        "comma-separated (x = (v * scale - mean[c]) / std[c])",
                                                        NULL, rw_ready));
    g_object_class_install_property(object_class, PROP_STD,
                                    g_param_spec_string("std", "Std",
                                                        "Divisor after the mean: one number or one per model channel, "
                                                        "comma-separated",
                                                        NULL, rw_ready));
    g_object_class_install_property(object_class, PROP_SCALE,
                                    g_param_spec_double("scale", "Scale",
                                                        "Factor applied to each sample value first (e.g. 0.00392156862745098 "
                                                        "= 1/255 for 8-bit video)",
                                                        -G_MAXFLOAT, G_MAXFLOAT, CO_GST_DEFAULT_SCALE, rw_ready));

    gst_element_class_add_static_pad_template(element_class, &sink_template);
    gst_element_class_add_static_pad_template(element_class, &src_template);
    gst_element_class_set_static_metadata(element_class, "Continual inference filter", "Filter/Video/Audio",
                                          "Steps a continual-c model one frame at a time and pushes each output frame "
                                          "as a float32 tensor",
                                          "continual-c");
}

static void gst_continual_filter_init(GstContinualFilter *self)
{
    self->sinkpad = gst_pad_new_from_static_template(&sink_template, "sink");
    gst_pad_set_chain_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_continual_filter_chain));
    gst_pad_set_event_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_continual_filter_sink_event));
    gst_pad_set_query_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_continual_filter_sink_query));
    gst_element_add_pad(GST_ELEMENT(self), self->sinkpad);
    self->srcpad = gst_pad_new_from_static_template(&src_template, "src");
    gst_pad_set_query_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_continual_filter_src_query));
    gst_pad_use_fixed_caps(self->srcpad);
    gst_element_add_pad(GST_ELEMENT(self), self->srcpad);

    self->batch = CO_GST_DEFAULT_BATCH;
    self->threads = CO_GST_DEFAULT_THREADS;
    self->pad_end = CO_GST_DEFAULT_PAD_END;
    self->scale = CO_GST_DEFAULT_SCALE;
    self->frame_duration = GST_CLOCK_TIME_NONE;
    self->last_out_pts = GST_CLOCK_TIME_NONE;
    self->first_in_pts = GST_CLOCK_TIME_NONE;
}

static gboolean plugin_init(GstPlugin *plugin)
{
    GST_DEBUG_CATEGORY_INIT(co_gst_debug, "continualfilter", 0, "continual-c inference filter");
    GST_INFO("libcontinual %s", co_version_string());
    return gst_element_register(plugin, "continualfilter", GST_RANK_NONE, GST_TYPE_CONTINUAL_FILTER);
}

/* The project states no licence yet; GStreamer's word for that is "unknown". */
GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, continual, "continual-c: Continual Inference Networks, frame by frame",
                  plugin_init, CO_GST_VERSION, "unknown", PACKAGE, CO_GST_ORIGIN)
