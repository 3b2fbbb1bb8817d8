//! A V4L2 memory-to-memory (stateful) encoder: raw pictures in on the OUTPUT queue, a
//! compressed stream out of the CAPTURE queue. bcm2835-codec (/dev/video11 on a Raspberry Pi)
//! gives H.264 this way; vicodec, the kernel's test codec, gives FWHT through the same protocol,
//! so nothing here is specific to H.264 except the controls and the SPS/PPS check.
//!
//! How it runs (the kernel's "Memory-to-Memory Stateful Video Encoder Interface"):
//! - Open: QUERYCAP (M2M or M2M_MPLANE), ENUM_FMT on both queues, S_FMT CAPTURE (the coded
//!   format) then OUTPUT (the camera's raw format, so no conversion), codec controls, REQBUFS +
//!   mmap on both, every CAPTURE buffer queued, STREAMON on both.
//! - `submit`: take back finished OUTPUT buffers, copy the picture into a free one (the one copy
//!   per frame) and queue it. Its timestamp is a sequence number, which the driver copies to the
//!   CAPTURE buffer that codes it; the in-flight table maps it back to the capture time. A
//!   sequence number in whole seconds survives drivers that truncate timestamps (bcm2835 keeps
//!   microseconds only).
//! - `poll`: dequeue finished CAPTURE buffers without blocking, copy the bytes out, requeue.
//! - `drain`: V4L2_ENC_CMD_STOP, then wait for the buffer flagged LAST; `restart` resumes with
//!   V4L2_ENC_CMD_START, or STREAMOFF/STREAMON on CAPTURE where the driver lacks it.
//!
//! Every wait is poll(2) with a timeout, together with an optional stop eventfd, so a stalled
//! driver turns into an error and a stop wakes the thread at once.
use super::controls::{apply_controls, control_plan, set_control, CodecTarget, ControlReport};
pub use super::queue::Api;
use super::queue::{self, format_of, set_format, Buf, Mapping};
use super::StopSignal;
use super::{device_caps, enum_formats, open_node, packed_layout, querycap, sys, DeviceInfo};
use crate::media::annexb::{self, AnnexBError, ParameterSets};
use crate::media::{clock, EncodedFrame, PixelFormat, VideoEncoder, VideoFrame};
use anyhow::Context as _;
use bytes::Bytes;
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Buffers asked for on each queue. Two would do for throughput; four leave room for a camera
/// that delivers in bursts. Drivers may give more (bcm2835 gives what is asked).
const BUFFERS: u32 = 4;
/// More than any driver hands back for a four-buffer request; the in-flight table's capacity.
pub const MAX_BUFFERS: usize = 16;
/// How long the driver may take to hand back a buffer before the encoder counts as stalled.
const STALL: Duration = Duration::from_secs(5);

/// Whether `info` can encode `raw` pictures into `coded` (a fourcc) with no conversion, and if
/// not, why (naming what it does take and give).
pub fn negotiate(info: &DeviceInfo, raw: PixelFormat, coded: u32) -> Result<Api, String> {
    let list = |formats: &[super::FormatInfo]| {
        let names: Vec<String> = formats.iter().map(|f| sys::fourcc_text(f.fourcc)).collect();
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(" ")
        }
    };
    let shown = info.path.display();
    let api = Api::for_m2m(info.caps)
        .filter(|_| info.is_m2m() && info.caps & sys::CAP_STREAMING != 0)
        .ok_or_else(|| format!("{shown} ({}) is not a memory-to-memory device", info.card))?;
    if !info.capture_formats.iter().any(|f| f.fourcc == coded) {
        return Err(format!(
            "{shown} ({}) does not encode {}: it gives {}",
            info.card,
            sys::fourcc_text(coded),
            list(&info.capture_formats)
        ));
    }
    if raw.is_compressed()
        || !info
            .output_formats
            .iter()
            .any(|f| f.fourcc == sys::fourcc(raw.fourcc()))
    {
        return Err(format!(
            "{shown} ({}) does not take {raw} pictures: it takes {}",
            info.card,
            list(&info.output_formats)
        ));
    }
    Ok(api)
}

/// Every M2M node that encodes `raw` into `coded`, in node order, with the reasons the other
/// encoders were passed over.
pub fn find_encoders(raw: PixelFormat, coded: u32) -> (Vec<(DeviceInfo, Api)>, Vec<String>) {
    let mut found = Vec::new();
    let mut passed = Vec::new();
    for node in super::video_nodes() {
        let Ok(info) = super::query(&node) else {
            continue;
        };
        if !info.is_m2m() {
            continue;
        }
        match negotiate(&info, raw, coded) {
            Ok(api) => found.push((info, api)),
            Err(why) => passed.push(why),
        }
    }
    (found, passed)
}

/// What the encoder is asked to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_bps: u32,
    /// Raw pictures in (the camera's format).
    pub raw: PixelFormat,
    /// The compressed format out, a fourcc: `H264`, or `FWHT` on vicodec.
    pub coded: u32,
}

const H264: u32 = sys::fourcc(*b"H264");

impl EncoderSettings {
    /// What the codec controls aim at.
    pub fn target(&self) -> CodecTarget {
        CodecTarget {
            width: self.width,
            height: self.height,
            fps: self.fps,
            bitrate_bps: self.bitrate_bps,
            coded: self.coded,
        }
    }
}

/// Sequence number → capture time of the pictures the driver holds. Fixed capacity: it lives
/// on the per-frame path, and a driver can hold no more pictures than it has buffers.
#[derive(Debug, Default)]
pub struct InFlight {
    slots: heapless::Deque<(u64, Duration), MAX_BUFFERS>,
}

impl InFlight {
    /// Remember a queued picture. If the table is full (a driver that silently dropped
    /// pictures), the oldest entry goes and is returned.
    pub fn insert(&mut self, key: u64, capture: Duration) -> Option<(u64, Duration)> {
        let evicted = if self.slots.is_full() {
            self.slots.pop_front()
        } else {
            None
        };
        let _ = self.slots.push_back((key, capture));
        evicted
    }

    /// The capture time for the coded picture stamped `key`. Pictures queued before it that
    /// never came out were skipped by the encoder (no B-frames: output is in input order):
    /// they are forgotten, and counted in the second value.
    pub fn take(&mut self, key: u64) -> (Option<Duration>, usize) {
        let mut skipped = 0;
        while let Some(&(k, capture)) = self.slots.front() {
            if k > key {
                break;
            }
            self.slots.pop_front();
            if k == key {
                return (Some(capture), skipped);
            }
            skipped += 1;
        }
        (None, skipped)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// How the encoder resumed after a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// V4L2_ENC_CMD_START.
    Command,
    /// STREAMOFF/STREAMON on the CAPTURE queue (a driver whose ENC_CMD_START does not restart
    /// it).
    Streamoff,
}

/// Counters for logs and the self-test.
#[derive(Debug, Clone, Copy, Default)]
pub struct M2mStats {
    pub submitted: u64,
    pub encoded: u64,
    pub bytes: u64,
    pub keyframes: u64,
    /// Pictures the driver took and never coded.
    pub skipped: u64,
    /// Coded buffers whose stamp matched no queued picture.
    pub unmatched: u64,
}

/// A V4L2 M2M encoder.
pub struct M2mEncoder {
    name: String,
    api: Api,
    settings: EncoderSettings,
    /// OUTPUT layout: bytes per row of the first plane, the rows each plane is laid out over
    /// (at least the picture's height), and the payload size the driver wants.
    bytesperline: u32,
    layout_height: u32,
    sizeimage: u32,
    /// Declared before `fd`: the mappings are unmapped before the fd closes. Empty while
    /// importing.
    outputs: Vec<Mapping>,
    output_count: usize,
    /// MEMORY_MMAP, or MEMORY_DMABUF while importing.
    out_memory: u32,
    /// Importing: the frame behind each queued OUTPUT buffer, held until the driver is done.
    held: Vec<Option<VideoFrame>>,
    /// Ok while importing DMABUFs, else why each picture is copied.
    import: Result<(), String>,
    captures: Vec<Mapping>,
    /// OUTPUT buffers we may fill.
    free: heapless::Vec<u32, MAX_BUFFERS>,
    inflight: InFlight,
    next_key: u64,
    keyframe_pending: bool,
    controls: ControlReport,
    /// H.264 only: keeps SPS/PPS in front of every IDR where the driver does not repeat them.
    sets: Option<ParameterSets>,
    ready: VecDeque<EncodedFrame>,
    /// The LAST buffer of a drain came back.
    drained: bool,
    /// A picture went in since the last `poll` that waited for one.
    just_submitted: bool,
    /// The OUTPUT buffers' width and height (the picture's, or aligned up from it).
    buffer_size: (u32, u32),
    /// Whether the crop to the picture was set, where the buffers are larger.
    cropped: Option<Result<(), String>>,
    stop: Option<Arc<OwnedFd>>,
    pub stats: M2mStats,
    fd: OwnedFd,
}

impl M2mEncoder {
    /// Open `path` and set it up to encode `settings`, copying each picture into its own
    /// buffers. Fails with the reason when the node is not an encoder for this format pair.
    pub fn open(path: &Path, settings: EncoderSettings) -> anyhow::Result<Self> {
        Self::open_with(path, settings, None)
    }

    /// As [`Self::open`]; with `import` (the camera's bytes per row, from
    /// [`crate::media::VideoSource::share_buffers`]) the OUTPUT queue imports each frame's DMABUF
    /// instead, so the picture is never copied, where the driver takes that layout and those
    /// buffers. Where it does not, it copies, and [`Self::import_status`] says why.
    pub fn open_with(
        path: &Path,
        settings: EncoderSettings,
        import: Option<u32>,
    ) -> anyhow::Result<Self> {
        let shown = path.display().to_string();
        let fd = open_node(path).with_context(|| format!("encoder {shown}: open"))?;
        let cap = querycap(&fd)
            .with_context(|| format!("encoder {shown} is not a V4L2 device (VIDIOC_QUERYCAP)"))?;
        let caps = device_caps(&cap);
        let info = DeviceInfo {
            path: path.to_owned(),
            driver: sys::text(&cap.driver),
            card: sys::text(&cap.card),
            bus: sys::text(&cap.bus_info),
            caps,
            capture_formats: match Api::for_m2m(caps) {
                Some(api) => enum_formats(&fd, api.capture_type(), false),
                None => Vec::new(),
            },
            output_formats: match Api::for_m2m(caps) {
                Some(api) => enum_formats(&fd, api.output_type(), false),
                None => Vec::new(),
            },
        };
        let api = negotiate(&info, settings.raw, settings.coded)
            .map_err(|e| anyhow::anyhow!("encoder {e}"))?;
        let name = format!("v4l2 m2m {shown} ({})", info.card);
        let coded_text = sys::fourcc_text(settings.coded);

        // The coded format first: the stateful encoder interface derives the OUTPUT side's
        // constraints from it.
        let mut fmt: sys::v4l2_format = sys::zeroed();
        fmt.type_ = api.capture_type();
        set_format(
            &mut fmt,
            api,
            settings.coded,
            settings.width,
            settings.height,
            0,
        );
        sys::ioctl(fd.as_fd(), sys::VIDIOC_S_FMT, &mut fmt)
            .with_context(|| format!("encoder {shown}: CAPTURE {coded_text} (VIDIOC_S_FMT)"))?;
        let got = format_of(&fmt, api);
        anyhow::ensure!(
            got.fourcc == settings.coded,
            "encoder {shown}: asked for {coded_text} on CAPTURE, the driver chose {}",
            sys::fourcc_text(got.fourcc)
        );

        let raw = sys::fourcc(settings.raw.fourcc());
        let mut fmt: sys::v4l2_format = sys::zeroed();
        fmt.type_ = api.output_type();
        // Imported buffers keep the camera's layout: ask for its row length (0: the driver's).
        let wanted_bpl = import.unwrap_or(0);
        set_format(
            &mut fmt,
            api,
            raw,
            settings.width,
            settings.height,
            wanted_bpl,
        );
        sys::ioctl(fd.as_fd(), sys::VIDIOC_S_FMT, &mut fmt).with_context(|| {
            format!(
                "encoder {shown}: OUTPUT {} {}x{} (VIDIOC_S_FMT)",
                settings.raw, settings.width, settings.height
            )
        })?;
        let got = format_of(&fmt, api);
        let (fourcc, width, height) = (got.fourcc, got.width, got.height);
        let queue::PlaneFormat {
            bytesperline,
            sizeimage,
        } = got.first_plane();
        anyhow::ensure!(
            fourcc == raw,
            "encoder {shown}: asked for {} on OUTPUT, the driver chose {}",
            settings.raw,
            sys::fourcc_text(fourcc)
        );
        anyhow::ensure!(
            fits_aligned(settings.width, width) && fits_aligned(settings.height, height),
            "encoder {shown} cannot encode {}x{} (it offers {width}x{height}): set [video] width and height to a size it takes, or encoder = \"software\"",
            settings.width,
            settings.height
        );
        let mut cropped = None;
        if (width, height) != (settings.width, settings.height) {
            // A codec that wants aligned buffers (bcm2835: 16 rows, so 1080 → 1088): the
            // picture fills the top left and the crop rectangle says so, else the padding
            // would be coded as part of the picture.
            if let Err(e) = crop(&fd, settings.width, settings.height) {
                tracing::warn!(
                    "encoder {shown}: buffers are {width}x{height} and the driver takes no crop to {}x{} ({e}); the stream carries the padding",
                    settings.width,
                    settings.height
                );
                cropped = Some(Err(e.to_string()));
            } else {
                cropped = Some(Ok(()));
            }
        }
        let min_stride = settings
            .raw
            .plane_geometry(0, width, height)
            .map_or(0, |g| g.1);
        let bytesperline = bytesperline.max(min_stride);
        let layout_height = layout_height(settings.raw, height, bytesperline, sizeimage);
        if layout_height != settings.height {
            tracing::debug!("encoder {shown}: planes laid out over {layout_height} rows");
        }
        let need: usize = packed_layout(settings.raw, layout_height, bytesperline)
            .iter()
            .map(|p| p.1)
            .sum();
        let sizeimage = sizeimage.max(need as u32);

        // Frame rate: what rate control budgets the bitrate over. Optional; vicodec has none.
        let mut parm: sys::v4l2_streamparm = sys::zeroed();
        parm.type_ = api.output_type();
        // v4l2_outputparm has v4l2_captureparm's layout, timeperframe at the same offset.
        parm.parm.capture.timeperframe = sys::v4l2_fract {
            numerator: 1,
            denominator: settings.fps.max(1),
        };
        if let Err(e) = sys::ioctl(fd.as_fd(), sys::VIDIOC_S_PARM, &mut parm) {
            tracing::debug!("encoder {shown}: no frame rate setting ({e})");
        }

        let import = match import {
            None => Err("not offered: the source lends no buffers".to_owned()),
            Some(bpl) if bpl != bytesperline || (width, height) != (settings.width, settings.height) => Err(format!(
                "the encoder lays {width}x{height} out with {bytesperline} bytes per row, the camera's {}x{} buffers have {bpl}",
                settings.width, settings.height
            )),
            Some(_) => Ok(()),
        };
        let what = format!("encoder {shown}");
        let controls = apply_controls(&what, &control_plan(&settings.target()), |c| {
            set_control(&fd, c.id, c.value)
        });

        let mut encoder = Self {
            name,
            api,
            settings,
            bytesperline,
            layout_height,
            sizeimage,
            outputs: Vec::new(),
            output_count: 0,
            out_memory: sys::MEMORY_MMAP,
            held: Vec::new(),
            import,
            captures: Vec::new(),
            free: heapless::Vec::new(),
            inflight: InFlight::default(),
            next_key: 1,
            keyframe_pending: false,
            sets: (settings.coded == H264).then(ParameterSets::new),
            controls,
            ready: VecDeque::new(),
            drained: false,
            just_submitted: false,
            buffer_size: (width, height),
            cropped,
            stop: None,
            stats: M2mStats::default(),
            fd,
        };
        if encoder.import.is_ok() {
            if let Err(e) = encoder.request_dmabuf_outputs() {
                encoder.import = Err(format!("the driver takes no DMABUF on OUTPUT ({e})"));
            }
        }
        if encoder.import.is_err() {
            encoder.outputs = encoder.allocate(api.output_type())?;
            encoder.output_count = encoder.outputs.len();
        }
        encoder.captures = encoder.allocate(api.capture_type())?;
        for index in 0..encoder.output_count as u32 {
            let _ = encoder.free.push(index);
        }
        for index in 0..encoder.captures.len() as u32 {
            encoder.queue_capture(index)?;
        }
        for ty in [api.output_type(), api.capture_type()] {
            let mut ty = ty as i32;
            sys::ioctl(encoder.fd.as_fd(), sys::VIDIOC_STREAMON, &mut ty)
                .with_context(|| format!("encoder {shown}: VIDIOC_STREAMON"))?;
        }
        tracing::info!(
            "encoder {shown} ({}): {} {}x{} → {coded_text}, {} API, {} OUTPUT and {} CAPTURE buffers",
            info.card,
            settings.raw,
            settings.width,
            settings.height,
            api.as_str(),
            encoder.output_count,
            encoder.captures.len()
        );
        match &encoder.import {
            Ok(()) => tracing::info!("encoder {shown}: imports the camera's DMABUFs (no copy)"),
            Err(why) => {
                tracing::debug!("encoder {shown}: copies each picture: DMABUF import {why}")
            }
        }
        Ok(encoder)
    }

    pub fn api(&self) -> Api {
        self.api
    }

    pub fn buffers(&self) -> (usize, usize) {
        (self.output_count, self.captures.len())
    }

    /// Ok when pictures reach the encoder as imported DMABUFs, else why they are copied.
    pub fn import_status(&self) -> Result<(), &str> {
        self.import.as_ref().map(|_| ()).map_err(String::as_str)
    }

    fn request_dmabuf_outputs(&mut self) -> std::io::Result<()> {
        let mut req = sys::v4l2_requestbuffers {
            count: BUFFERS,
            type_: self.api.output_type(),
            memory: sys::MEMORY_DMABUF,
            ..sys::zeroed()
        };
        sys::ioctl(self.fd.as_fd(), sys::VIDIOC_REQBUFS, &mut req)?;
        if !(1..=MAX_BUFFERS as u32).contains(&req.count) {
            return Err(std::io::Error::other(format!("{} buffers", req.count)));
        }
        self.output_count = req.count as usize;
        self.out_memory = sys::MEMORY_DMABUF;
        self.held = vec![None; self.output_count];
        Ok(())
    }

    /// Stop importing (a frame without a DMABUF, or one the driver refused) and copy from now
    /// on: OUTPUT is stopped, its buffers swapped for mmap ones and started again. Only while
    /// no picture is queued, so nothing in flight is lost.
    fn fall_back_to_copies(&mut self, why: String) -> anyhow::Result<()> {
        tracing::warn!("encoder {}: {why}; copying each picture instead", self.name);
        let mut ty = self.api.output_type() as i32;
        sys::ioctl(self.fd.as_fd(), sys::VIDIOC_STREAMOFF, &mut ty)
            .with_context(|| format!("encoder {}: VIDIOC_STREAMOFF OUTPUT", self.name))?;
        self.held.clear();
        let mut req = sys::v4l2_requestbuffers {
            count: 0,
            type_: self.api.output_type(),
            memory: sys::MEMORY_DMABUF,
            ..sys::zeroed()
        };
        sys::ioctl(self.fd.as_fd(), sys::VIDIOC_REQBUFS, &mut req)
            .with_context(|| format!("encoder {}: VIDIOC_REQBUFS 0", self.name))?;
        self.out_memory = sys::MEMORY_MMAP;
        self.outputs = self.allocate(self.api.output_type())?;
        self.output_count = self.outputs.len();
        self.free.clear();
        for index in 0..self.output_count as u32 {
            let _ = self.free.push(index);
        }
        let mut ty = self.api.output_type() as i32;
        sys::ioctl(self.fd.as_fd(), sys::VIDIOC_STREAMON, &mut ty)
            .with_context(|| format!("encoder {}: VIDIOC_STREAMON OUTPUT", self.name))?;
        self.import = Err(why);
        Ok(())
    }

    /// The OUTPUT buffers' size, and whether the crop to the picture was set where it is
    /// larger (`None`: same size, no crop needed).
    pub fn buffer_size(&self) -> ((u32, u32), Option<&Result<(), String>>) {
        (self.buffer_size, self.cropped.as_ref())
    }

    pub fn controls(&self) -> &ControlReport {
        &self.controls
    }

    fn shown(&self) -> &str {
        &self.name
    }

    fn allocate(&self, ty: u32) -> anyhow::Result<Vec<Mapping>> {
        let mut req = sys::v4l2_requestbuffers {
            count: BUFFERS,
            type_: ty,
            memory: sys::MEMORY_MMAP,
            ..sys::zeroed()
        };
        sys::ioctl(self.fd.as_fd(), sys::VIDIOC_REQBUFS, &mut req)
            .with_context(|| format!("encoder {}: VIDIOC_REQBUFS", self.shown()))?;
        anyhow::ensure!(
            (1..=MAX_BUFFERS as u32).contains(&req.count),
            "encoder {}: the driver gave {} buffers (1 to {MAX_BUFFERS} expected)",
            self.shown(),
            req.count
        );
        let mut maps = Vec::with_capacity(req.count as usize);
        for index in 0..req.count {
            let mut buf = Buf::new(self.api, ty, index);
            buf.ioctl(&self.fd, sys::VIDIOC_QUERYBUF)
                .with_context(|| format!("encoder {}: VIDIOC_QUERYBUF {index}", self.shown()))?;
            maps.push(
                queue::map(&self.fd, &buf, 0, true)
                    .with_context(|| format!("encoder {}: mmap", self.shown()))?,
            );
        }
        Ok(maps)
    }

    fn queue_capture(&mut self, index: u32) -> anyhow::Result<()> {
        let mut buf = Buf::new(self.api, self.api.capture_type(), index);
        buf.planes[0].length = self.captures[index as usize].len as u32;
        buf.ioctl(&self.fd, sys::VIDIOC_QBUF)
            .with_context(|| format!("encoder {}: VIDIOC_QBUF CAPTURE {index}", self.shown()))
    }

    /// Dequeue one buffer of `ty` without blocking; `None` when none is ready. A CAPTURE queue
    /// that has handed out its LAST buffer answers EPIPE until restarted: that is an error here
    /// unless a drain is what stopped it, so a stopped queue never turns into a busy loop.
    fn dequeue(&self, ty: u32) -> anyhow::Result<Option<Buf>> {
        let mut buf = Buf::new(self.api, ty, 0);
        if ty == self.api.output_type() {
            buf.buf.memory = self.out_memory;
        }
        match buf.ioctl(&self.fd, sys::VIDIOC_DQBUF) {
            Ok(()) => {
                tracing::trace!(
                    "encoder {}: DQBUF type {ty} index {} flags {:#x} bytesused {} stamp {}",
                    self.name,
                    buf.buf.index,
                    buf.buf.flags,
                    buf.bytesused(0),
                    buf.buf.timestamp.tv_sec
                );
                Ok(Some(buf))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) && self.drained => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => anyhow::bail!(
                "encoder {}: the CAPTURE queue stopped (EPIPE after its LAST buffer) without a drain",
                self.shown()
            ),
            Err(e) => anyhow::bail!("encoder {}: VIDIOC_DQBUF: {e}", self.shown()),
        }
    }

    /// Take back finished OUTPUT buffers and collect coded CAPTURE buffers. Returns whether
    /// anything came back.
    fn pump(&mut self) -> anyhow::Result<bool> {
        let mut progress = false;
        while let Some(buf) = self.dequeue(self.api.output_type())? {
            progress = true;
            // The driver is done reading an imported picture: its buffer goes back to the camera.
            if let Some(held) = self.held.get_mut(buf.buf.index as usize) {
                *held = None;
            }
            if !self.free.contains(&buf.buf.index) {
                let _ = self.free.push(buf.buf.index);
            }
        }
        while let Some(buf) = self.dequeue(self.api.capture_type())? {
            progress = true;
            self.collect(&buf)?;
            self.queue_capture(buf.buf.index)?;
        }
        Ok(progress)
    }

    fn collect(&mut self, buf: &Buf) -> anyhow::Result<()> {
        let index = buf.buf.index as usize;
        let flags = buf.buf.flags;
        if flags & sys::BUF_FLAG_LAST != 0 {
            self.drained = true;
        }
        let used = buf.bytesused(0);
        if used == 0 || index >= self.captures.len() {
            // The LAST buffer of a drain is often empty.
            return Ok(());
        }
        if flags & sys::BUF_FLAG_ERROR != 0 {
            tracing::debug!(
                "encoder {}: a coded buffer flagged ERROR, dropped",
                self.name
            );
            let _ = self.inflight.take(buf.buf.timestamp.tv_sec as u64);
            return Ok(());
        }
        let map = &self.captures[index];
        let at = buf.data_offset(0).min(map.len);
        let end = (at + used).min(map.len);
        // SAFETY: the driver filled these bytes and hands the buffer to us until the requeue
        // that follows this copy.
        let data = Bytes::copy_from_slice(unsafe {
            std::slice::from_raw_parts((map.ptr as *const u8).add(at), end - at)
        });
        if let Some(sets) = self.sets.as_mut() {
            if !annexb::has_slice(&data) {
                // SPS/PPS in a buffer of their own, stamped like the picture that follows:
                // remembered (they go in front of the IDR), not sent, and the picture keeps
                // its entry in the table.
                let _ = sets.process(data);
                return Ok(());
            }
        }
        let key = buf.buf.timestamp.tv_sec as u64;
        let (capture, skipped) = self.inflight.take(key);
        self.stats.skipped += skipped as u64;
        let capture = capture.unwrap_or_else(|| {
            self.stats.unmatched += 1;
            tracing::debug!(
                "encoder {}: coded buffer stamped {key} matches no picture",
                self.name
            );
            clock::monotonic_now()
        });
        let mut keyframe = flags & sys::BUF_FLAG_KEYFRAME != 0;
        let data = match self.sets.as_mut() {
            Some(sets) => match sets.process(data) {
                Ok(unit) => {
                    keyframe = unit.keyframe;
                    unit.data
                }
                Err(AnnexBError::NoParameterSets) => {
                    tracing::warn!("encoder {}: an IDR without SPS/PPS, dropped", self.name);
                    self.keyframe_pending = true;
                    return Ok(());
                }
                Err(e) => anyhow::bail!("encoder {}: {e}", self.name),
            },
            None => data,
        };
        self.stats.encoded += 1;
        self.stats.bytes += data.len() as u64;
        self.stats.keyframes += u64::from(keyframe);
        self.ready.push_back(EncodedFrame {
            data,
            keyframe,
            capture,
        });
        Ok(())
    }

    /// Block in poll(2) until the device has something for us (`events`), the stop fd fires,
    /// or `timeout` passes. Ok(None) when the time ran out, Ok(Some(false)) when stopped.
    fn wait(&self, events: i16, timeout: Duration) -> anyhow::Result<Option<bool>> {
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events,
                revents: 0,
            },
            libc::pollfd {
                // A negative fd (no stop signal) is ignored by poll(2).
                fd: self.stop.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ready = crate::media::poll_fds(&mut fds, timeout)
            .map_err(|e| anyhow::anyhow!("encoder {}: poll: {e}", self.name))?;
        Ok(ready.then_some(fds[1].revents == 0))
    }

    /// Wait until `done` holds, pumping the queues. Fails after STALL without progress.
    fn pump_until(&mut self, mut done: impl FnMut(&Self) -> bool) -> anyhow::Result<bool> {
        let mut last_progress = clock::monotonic_now();
        loop {
            if self.pump()? {
                last_progress = clock::monotonic_now();
            }
            if done(self) {
                return Ok(true);
            }
            let waited = clock::monotonic_now().saturating_sub(last_progress);
            anyhow::ensure!(
                waited < STALL,
                "encoder {}: no buffer back for {} s: the encoder stalled",
                self.name,
                STALL.as_secs()
            );
            // poll(2) on an M2M node also returns at once with POLLERR when a queue has
            // nothing queued; the STALL bound above ends such a loop.
            tracing::trace!(
                "encoder {}: waiting, {} free OUTPUT buffers",
                self.name,
                self.free.len()
            );
            match self.wait(libc::POLLIN | libc::POLLOUT, STALL - waited)? {
                Some(true) => {}
                Some(false) => return Ok(false),
                None => anyhow::bail!(
                    "encoder {}: no buffer back for {} s: the encoder stalled",
                    self.name,
                    STALL.as_secs()
                ),
            }
        }
    }

    /// Copy `frame` into OUTPUT buffer `index`: the one copy on this path.
    fn fill(&mut self, index: u32, frame: &VideoFrame) -> anyhow::Result<u32> {
        let map = &self.outputs[index as usize];
        let layout = packed_layout(frame.format, self.layout_height, self.bytesperline);
        for (i, (&(at, len, stride), plane)) in layout.iter().zip(&frame.planes).enumerate() {
            let (rows, row_bytes) = frame
                .format
                .plane_geometry(i, frame.width, frame.height)
                .expect("raw formats have plane geometry");
            anyhow::ensure!(
                at + len <= map.len,
                "encoder {}: OUTPUT buffer of {} bytes is too small for {} {}x{}",
                self.name,
                map.len,
                frame.format,
                frame.width,
                frame.height
            );
            for row in 0..rows as usize {
                let src = &plane.data[row * plane.stride..row * plane.stride + row_bytes as usize];
                // SAFETY: `at + row * stride + row_bytes <= at + len <= map.len` (checked above;
                // row_bytes <= stride because stride comes from bytesperline ≥ the row width),
                // and the buffer is ours until QBUF.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        (map.ptr as *mut u8).add(at + row * stride),
                        src.len(),
                    );
                }
            }
        }
        Ok(self.sizeimage.min(map.len as u32))
    }

    /// V4L2_ENC_CMD_STOP, then collect everything up to the buffer flagged LAST. Returns
    /// whether LAST was seen (false only when stopped first). The coded pictures wait for
    /// `poll`.
    pub fn drain(&mut self) -> anyhow::Result<bool> {
        let mut cmd: sys::v4l2_encoder_cmd = sys::zeroed();
        cmd.cmd = sys::ENC_CMD_STOP;
        if let Err(e) = sys::ioctl(self.fd.as_fd(), sys::VIDIOC_ENCODER_CMD, &mut cmd) {
            // No drain command: wait until every queued picture came out instead.
            tracing::warn!(
                "encoder {}: no V4L2_ENC_CMD_STOP ({e}); waiting for the queued pictures instead",
                self.name
            );
            return self.pump_until(|s| s.inflight.is_empty());
        }
        tracing::debug!(
            "encoder {}: draining, {} pictures in flight",
            self.name,
            self.inflight.len()
        );
        self.pump_until(|s| s.drained)
    }

    /// Resume after a drain: V4L2_ENC_CMD_START. Some drivers accept it yet keep the CAPTURE
    /// queue stopped (vicodec in Linux 6.1 clears its stopped state before checking it, so its
    /// CAPTURE queue still answers EPIPE); there, and where START is refused, STREAMOFF and
    /// STREAMON on CAPTURE restart it, as the stateful encoder interface also allows. STREAMOFF
    /// hands back every CAPTURE buffer, so they are all queued again.
    pub fn restart(&mut self) -> anyhow::Result<Restart> {
        let mut cmd: sys::v4l2_encoder_cmd = sys::zeroed();
        cmd.cmd = sys::ENC_CMD_START;
        let started = sys::ioctl(self.fd.as_fd(), sys::VIDIOC_ENCODER_CMD, &mut cmd);
        let how = match &started {
            Ok(()) => {
                // A DQBUF now says whether CAPTURE runs again: EAGAIN (or a buffer) if so,
                // EPIPE if it still counts as stopped.
                let mut probe = Buf::new(self.api, self.api.capture_type(), 0);
                match probe.ioctl(&self.fd, sys::VIDIOC_DQBUF) {
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => None,
                    Ok(()) => {
                        self.collect(&probe)?;
                        self.queue_capture(probe.buf.index)?;
                        Some(Restart::Command)
                    }
                    Err(_) => Some(Restart::Command),
                }
            }
            Err(_) => None,
        };
        self.drained = false;
        if let Some(how) = how {
            return Ok(how);
        }
        tracing::debug!(
            "encoder {}: V4L2_ENC_CMD_START {}; restarting CAPTURE with STREAMOFF/STREAMON",
            self.name,
            match started {
                Ok(()) => "left CAPTURE stopped".to_owned(),
                Err(e) => e.to_string(),
            }
        );
        let mut ty = self.api.capture_type() as i32;
        sys::ioctl(self.fd.as_fd(), sys::VIDIOC_STREAMOFF, &mut ty)
            .with_context(|| format!("encoder {}: VIDIOC_STREAMOFF", self.name))?;
        for index in 0..self.captures.len() as u32 {
            self.queue_capture(index)?;
        }
        let mut ty = self.api.capture_type() as i32;
        sys::ioctl(self.fd.as_fd(), sys::VIDIOC_STREAMON, &mut ty)
            .with_context(|| format!("encoder {}: VIDIOC_STREAMON", self.name))?;
        Ok(Restart::Streamoff)
    }
}

/// The rows a driver lays a 4:2:0 picture's planes over. Most use the picture's height, but a
/// driver may pad it to its macroblock alignment (1080 → 1088) and say so only through
/// `sizeimage`: the chroma planes then start after the padded luma plane.
pub fn layout_height(format: PixelFormat, height: u32, bytesperline: u32, sizeimage: u32) -> u32 {
    if !matches!(format, PixelFormat::Yu12 | PixelFormat::Nv12) || bytesperline == 0 {
        return height;
    }
    let padded = u64::from(sizeimage) * 2 / (3 * u64::from(bytesperline));
    // Only a padding to the next multiple of 16 or 32 rows is believed; anything else is a
    // driver's spare room at the end of the buffer.
    let padded = padded as u32 & !1;
    if padded > height && padded <= height.next_multiple_of(32) {
        padded
    } else {
        height
    }
}

/// Whether a driver's buffer dimension `got` holds a picture dimension `want`: equal, or padded
/// to an alignment of at most 32.
pub fn fits_aligned(want: u32, got: u32) -> bool {
    got >= want && got <= want.next_multiple_of(32)
}

fn crop(fd: &OwnedFd, width: u32, height: u32) -> std::io::Result<()> {
    let mut sel = sys::v4l2_selection {
        // The kernel hands drivers the single-planar type whichever API the queue speaks.
        type_: sys::BUF_TYPE_VIDEO_OUTPUT,
        target: sys::SEL_TGT_CROP,
        flags: 0,
        r: sys::v4l2_rect {
            left: 0,
            top: 0,
            width,
            height,
        },
        reserved: [0; 9],
    };
    sys::ioctl(fd.as_fd(), sys::VIDIOC_S_SELECTION, &mut sel)?;
    if (sel.r.width, sel.r.height) != (width, height) {
        return Err(std::io::Error::other(format!(
            "it set {}x{}",
            sel.r.width, sel.r.height
        )));
    }
    Ok(())
}

impl VideoEncoder for M2mEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn submit(&mut self, frame: VideoFrame) -> anyhow::Result<()> {
        let s = self.settings;
        anyhow::ensure!(
            frame.format == s.raw && (frame.width, frame.height) == (s.width, s.height),
            "encoder {}: set up for {} {}x{}, got {} {}x{}",
            self.name,
            s.raw,
            s.width,
            s.height,
            frame.format,
            frame.width,
            frame.height
        );
        frame.validate()?;
        if self.free.is_empty() && !self.pump_until(|s| !s.free.is_empty())? {
            return Ok(());
        }
        let index = self.free.pop().expect("a free OUTPUT buffer");
        if std::mem::take(&mut self.keyframe_pending) && !self.controls.lacks("FORCE_KEY_FRAME") {
            // A button control: the next picture queued becomes a keyframe.
            if let Err(e) = set_control(&self.fd, sys::CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1) {
                tracing::warn!(
                    "encoder {}: the driver lacks FORCE_KEY_FRAME ({e}); keyframes come only at the GOP's period",
                    self.name
                );
                self.controls
                    .lacking
                    .push(("FORCE_KEY_FRAME", e.to_string()));
            }
        }
        if self.import.is_ok() && frame.dmabuf.is_none() {
            let _ = self.free.push(index);
            self.fall_back_to_copies("a frame came without a DMABUF".into())?;
            return self.submit(frame);
        }
        let key = self.next_key;
        let mut buf = Buf::new(self.api, self.api.output_type(), index);
        buf.buf.memory = self.out_memory;
        match (&self.import, &frame.dmabuf) {
            (Ok(()), Some(dmabuf)) => {
                let fd = dmabuf.as_raw_fd();
                // The DMABUF's size: the multi-planar API checks bytesused against the length
                // given here (0 would refuse every picture).
                // SAFETY: lseek on a live fd we hold; a dma-buf answers SEEK_END with its size.
                let size = unsafe { libc::lseek(fd, 0, libc::SEEK_END) }.max(0) as u32;
                if self.api == Api::MultiPlanar {
                    buf.planes[0].m.fd = fd;
                    buf.planes[0].length = size;
                } else {
                    buf.buf.m.fd = fd;
                    buf.buf.length = size;
                }
                buf.set_bytesused(self.sizeimage.min(size));
            }
            _ => {
                let used = self.fill(index, &frame)?;
                buf.set_bytesused(used);
                buf.planes[0].length = self.outputs[index as usize].len as u32;
            }
        }
        buf.buf.field = sys::FIELD_NONE;
        buf.buf.timestamp = libc::timeval {
            tv_sec: key as _,
            tv_usec: 0,
        };
        if let Err(e) = buf.ioctl(&self.fd, sys::VIDIOC_QBUF) {
            let _ = self.free.push(index);
            if self.import.is_ok() && self.free.len() == self.output_count {
                // The first import the driver refuses (memory it cannot reach): copy instead.
                self.fall_back_to_copies(format!("the driver refused the camera's DMABUF ({e})"))?;
                return self.submit(frame);
            }
            anyhow::bail!("encoder {}: VIDIOC_QBUF OUTPUT {index}: {e}", self.name);
        }
        self.next_key += 1;
        if let Some(lost) = self.inflight.insert(key, frame.capture) {
            self.stats.skipped += 1;
            tracing::debug!("encoder {}: picture {} never came out", self.name, lost.0);
        }
        if let Some(held) = self.held.get_mut(index as usize) {
            // Keeps the camera's buffer (and the DMABUF) until the driver hands it back.
            *held = Some(frame);
        }
        self.stats.submitted += 1;
        self.just_submitted = true;
        Ok(())
    }

    /// Right after a submit, waits (poll(2) on the device) up to one frame interval for a coded
    /// picture, so a hardware encoder that takes a few milliseconds hands its picture over now
    /// rather than at the next submit, a frame later. An encoder that holds pictures back
    /// costs at most that interval once per frame.
    fn poll(&mut self) -> anyhow::Result<Option<EncodedFrame>> {
        if self.ready.is_empty() {
            self.pump()?;
        }
        if self.ready.is_empty()
            && std::mem::take(&mut self.just_submitted)
            && !self.inflight.is_empty()
        {
            let interval = Duration::from_secs(1) / self.settings.fps.max(1);
            if self.wait(libc::POLLIN, interval)?.is_some() {
                self.pump()?;
            }
        }
        Ok(self.ready.pop_front())
    }

    fn request_keyframe(&mut self) {
        self.keyframe_pending = true;
    }

    /// A wait on the device (a full OUTPUT queue, a drain) ends at once when `stop` is raised.
    fn set_stop(&mut self, stop: &StopSignal) -> anyhow::Result<()> {
        self.stop = Some(stop.fd()?);
        Ok(())
    }

    fn set_bitrate(&mut self, bps: u32) -> anyhow::Result<()> {
        if self.controls.lacks("BITRATE") {
            return Ok(());
        }
        set_control(&self.fd, sys::CID_MPEG_VIDEO_BITRATE, i64::from(bps))
            .with_context(|| format!("encoder {}: BITRATE {bps}", self.name))
    }
}

impl Drop for M2mEncoder {
    fn drop(&mut self) {
        for ty in [self.api.output_type(), self.api.capture_type()] {
            let mut ty = ty as i32;
            let _ = sys::ioctl(self.fd.as_fd(), sys::VIDIOC_STREAMOFF, &mut ty);
        }
        // The mappings go before the fd closes (fields drop after this body, `fd` last).
        self.outputs.clear();
        self.captures.clear();
        // Imported frames go back to the camera once OUTPUT is off.
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::v4l2::FormatInfo;

    fn formats(list: &[&[u8; 4]], compressed: bool) -> Vec<FormatInfo> {
        list.iter()
            .map(|c| FormatInfo {
                fourcc: sys::fourcc(**c),
                description: String::new(),
                compressed,
                sizes: Vec::new(),
            })
            .collect()
    }

    fn device(caps: u32, capture: &[&[u8; 4]], output: &[&[u8; 4]]) -> DeviceInfo {
        DeviceInfo {
            path: "/dev/video11".into(),
            driver: "bcm2835-codec".into(),
            card: "bcm2835-codec-encode".into(),
            bus: "platform:bcm2835-codec".into(),
            caps: caps | sys::CAP_STREAMING,
            capture_formats: formats(capture, true),
            output_formats: formats(output, false),
        }
    }

    #[test]
    fn negotiation_takes_the_camera_format_and_the_coded_one_on_each_queue() {
        let pi = device(
            sys::CAP_VIDEO_M2M_MPLANE,
            &[b"H264", b"MJPG"],
            &[b"YU12", b"NV12", b"YUYV"],
        );
        assert_eq!(
            negotiate(&pi, PixelFormat::Yuyv, H264),
            Ok(Api::MultiPlanar)
        );
        let vicodec = device(sys::CAP_VIDEO_M2M, &[b"FWHT"], &[b"YU12", b"YUYV"]);
        assert_eq!(
            negotiate(&vicodec, PixelFormat::Yu12, sys::fourcc(*b"FWHT")),
            Ok(Api::SinglePlanar)
        );
        // vicodec does not give H.264, and the reason names what it gives.
        let err = negotiate(&vicodec, PixelFormat::Yu12, H264).unwrap_err();
        assert!(
            err.contains("does not encode H264") && err.contains("FWHT"),
            "{err}"
        );
        // No conversion on the way in: a camera format the encoder does not take is refused.
        let err = negotiate(&pi, PixelFormat::Mjpeg, H264).unwrap_err();
        assert!(
            err.contains("MJPG") && err.contains("YU12 NV12 YUYV"),
            "{err}"
        );
        let only_nv12 = device(sys::CAP_VIDEO_M2M_MPLANE, &[b"H264"], &[b"NV12"]);
        assert!(negotiate(&only_nv12, PixelFormat::Yuyv, H264).is_err());
        // A camera is not an encoder.
        let camera = device(sys::CAP_VIDEO_CAPTURE, &[b"H264"], &[]);
        assert!(negotiate(&camera, PixelFormat::Yuyv, H264)
            .unwrap_err()
            .contains("not a memory-to-memory"));
    }

    #[test]
    fn the_in_flight_table_maps_stamps_back_and_forgets_skipped_pictures() {
        let mut table = InFlight::default();
        let t = |ms| Duration::from_millis(ms);
        for key in 1..=4 {
            assert_eq!(table.insert(key, t(key * 33)), None);
        }
        assert_eq!(table.take(1), (Some(t(33)), 0));
        // The driver skipped picture 2: it is forgotten on the way to 3.
        assert_eq!(table.take(3), (Some(t(99)), 1));
        // A stamp that matches nothing (already taken) leaves the rest.
        assert_eq!(table.take(3), (None, 0));
        assert_eq!(table.len(), 1);
        // Full: the oldest goes, so a driver that drops pictures cannot grow it.
        for key in 5..5 + MAX_BUFFERS as u64 - 1 {
            assert_eq!(table.insert(key, t(key)), None);
        }
        assert_eq!(table.insert(100, t(100)), Some((4, t(132))));
        assert_eq!(table.len(), MAX_BUFFERS);
    }

    #[test]
    fn a_driver_that_pads_the_luma_rows_moves_the_chroma_planes() {
        // 1920x1080 YU12 laid out over 1088 rows.
        let padded = 1920 * 1088 * 3 / 2;
        assert_eq!(layout_height(PixelFormat::Yu12, 1080, 1920, padded), 1088);
        assert_eq!(
            layout_height(PixelFormat::Yu12, 1080, 1920, 1920 * 1080 * 3 / 2),
            1080
        );
        // Spare room far beyond an alignment is not mistaken for padding.
        assert_eq!(
            layout_height(PixelFormat::Nv12, 480, 640, 640 * 960 * 3 / 2),
            480
        );
        // Packed 4:2:2 has one plane: nothing to move.
        assert_eq!(
            layout_height(PixelFormat::Yuyv, 1080, 3840, 3840 * 1088),
            1080
        );
    }

    #[test]
    fn a_buffer_padded_to_an_alignment_holds_the_picture_and_a_smaller_one_does_not() {
        assert!(fits_aligned(1080, 1088) && fits_aligned(720, 720));
        assert!(
            !fits_aligned(1080, 1072),
            "rounded down: the picture does not fit"
        );
        assert!(
            !fits_aligned(480, 720),
            "a different size, not an alignment"
        );
    }

    #[test]
    fn opening_a_missing_node_names_it() {
        let settings = EncoderSettings {
            width: 640,
            height: 480,
            fps: 30,
            bitrate_bps: 1_000_000,
            raw: PixelFormat::Yu12,
            coded: H264,
        };
        let err = M2mEncoder::open(Path::new("/dev/video-roomcast-absent"), settings)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("/dev/video-roomcast-absent"),
            "{err:#}"
        );
    }
}
