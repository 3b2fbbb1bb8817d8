//! V4L2 cameras: find one (by path, or by name or bus for a USB camera whose `/dev/videoN`
//! moves), negotiate the configured size and rate, and stream it with mmap buffers.
//!
//! The camera is a [`VideoSource`]: the pipeline's capture thread calls `next_frame`, which
//! polls the device together with the [`StopSignal`]'s eventfd, so a stop wakes it at once and
//! the thread can be joined. Each frame is copied once out of the driver's buffer (which then
//! goes straight back to the driver) and carries the buffer's CLOCK_MONOTONIC timestamp as its
//! capture time.
//!
//! Formats, in order of preference: H.264 (the camera encodes; passed through), then YUYV,
//! NV12 and YU12 (to the H.264 encoder), then MJPEG (decoded in software, see `media::mjpeg`,
//! with a warning about its cost), unless `[video] format` names one.
//!
//! Single- and multi-planar capture queues take the same path (see [`queue`]): a multi-planar
//! camera's NV12, YU12 or YUYV in one memory plane (what most SoC capture paths and vivid with
//! `multiplanar=2` give) is laid out like a single-planar one, and NV12M/YUV420M, where a driver
//! offers 4:2:0 only with each plane in a memory plane of its own, give frames whose planes
//! live in separate buffers.
//!
//! A camera that vanishes (unplugged: poll reports an error, DQBUF fails with ENODEV) ends the
//! capture with an error; the supervisor keeps the publication and opens the camera again by the
//! same path, name or bus with backoff until it is back.
pub mod controls;
pub mod m2m;
pub mod queue;
pub mod selftest;
pub mod sys;

use super::{clock, PixelFormat, Plane, StopSignal, VideoFormat, VideoFrame, VideoSource};
use anyhow::Context as _;
use bytes::Bytes;
use queue::{Api, Buf, Mapping, PlaneFormat, MAX_PLANES};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How the config names a camera: `[video] device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `/dev/video0`, or a stable udev link such as `/dev/v4l/by-id/usb-...-video-index0`.
    Path(PathBuf),
    /// `name:HD Pro Webcam`: the first capture device whose card name contains this text.
    Name(String),
    /// `bus:usb-0000:01:00.0-1.2`: the capture device on this bus (`bus_info`).
    Bus(String),
}

impl Selector {
    pub fn parse(device: &str) -> Self {
        if let Some(name) = device.strip_prefix("name:") {
            Self::Name(name.trim().to_owned())
        } else if let Some(bus) = device.strip_prefix("bus:") {
            Self::Bus(bus.trim().to_owned())
        } else {
            Self::Path(PathBuf::from(device))
        }
    }
}

/// What QUERYCAP and the format enumeration say about one node.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub path: PathBuf,
    pub driver: String,
    pub card: String,
    pub bus: String,
    /// The node's own capabilities (`device_caps` where the driver reports it).
    pub caps: u32,
    /// Formats on the capture queue (single- or multi-planar).
    pub capture_formats: Vec<FormatInfo>,
    /// Formats on the output queue (an M2M device's input).
    pub output_formats: Vec<FormatInfo>,
}

#[derive(Debug, Clone)]
pub struct FormatInfo {
    pub fourcc: u32,
    pub description: String,
    pub compressed: bool,
    pub sizes: Vec<SizeInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SizeInfo {
    /// A fixed size and the frame rates offered at it.
    Discrete {
        width: u32,
        height: u32,
        fps: Vec<f64>,
    },
    /// Any size in a range.
    Range {
        min: (u32, u32),
        max: (u32, u32),
        step: (u32, u32),
    },
}

impl DeviceInfo {
    pub fn is_capture(&self) -> bool {
        self.caps & sys::CAP_STREAMING != 0
            && self.caps & (sys::CAP_VIDEO_CAPTURE | sys::CAP_VIDEO_CAPTURE_MPLANE) != 0
            && !self.is_m2m()
    }

    pub fn is_m2m(&self) -> bool {
        self.caps & (sys::CAP_VIDEO_M2M | sys::CAP_VIDEO_M2M_MPLANE) != 0
            || self.caps & (sys::CAP_VIDEO_CAPTURE | sys::CAP_VIDEO_CAPTURE_MPLANE) != 0
                && self.caps & (sys::CAP_VIDEO_OUTPUT | sys::CAP_VIDEO_OUTPUT_MPLANE) != 0
    }

    /// An M2M device that turns a raw format into H.264: H264 on CAPTURE, a raw format we can
    /// feed on OUTPUT.
    pub fn is_h264_encoder(&self) -> bool {
        self.is_m2m()
            && self.caps & sys::CAP_STREAMING != 0
            && self
                .capture_formats
                .iter()
                .any(|f| f.fourcc == sys::fourcc(*b"H264"))
            && self.output_formats.iter().any(|f| {
                PixelFormat::from_fourcc(f.fourcc.to_le_bytes()).is_some_and(|p| !p.is_compressed())
            })
    }

    /// An M2M device whose CAPTURE queue gives some compressed format (FWHT on vicodec).
    pub fn is_encoder(&self) -> bool {
        self.is_m2m()
            && self.capture_formats.iter().any(|f| f.compressed)
            && self.output_formats.iter().any(|f| !f.compressed)
    }
}

fn open_node(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    Ok(file.into())
}

fn querycap(fd: &OwnedFd) -> std::io::Result<sys::v4l2_capability> {
    let mut cap: sys::v4l2_capability = sys::zeroed();
    sys::ioctl(fd.as_fd(), sys::VIDIOC_QUERYCAP, &mut cap)?;
    Ok(cap)
}

fn device_caps(cap: &sys::v4l2_capability) -> u32 {
    if cap.capabilities & sys::CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    }
}

/// At most this many formats are asked for: the enumeration ends at the driver's EINVAL, and
/// the bound only stops a broken driver that never says it. vivid (Linux 6.1) offers 83 on its
/// single-planar queue and 93 on its multi-planar one, NV12M among the last, which a bound of 64
/// hid.
const MAX_FORMATS: u32 = 256;

fn enum_formats(fd: &OwnedFd, buf_type: u32, with_sizes: bool) -> Vec<FormatInfo> {
    let mut out = Vec::new();
    for index in 0..MAX_FORMATS {
        let mut desc: sys::v4l2_fmtdesc = sys::zeroed();
        desc.index = index;
        desc.type_ = buf_type;
        if sys::ioctl(fd.as_fd(), sys::VIDIOC_ENUM_FMT, &mut desc).is_err() {
            break;
        }
        let sizes = if with_sizes {
            enum_sizes(fd, desc.pixelformat)
        } else {
            Vec::new()
        };
        out.push(FormatInfo {
            fourcc: desc.pixelformat,
            description: sys::text(&desc.description),
            compressed: desc.flags & sys::FMT_FLAG_COMPRESSED != 0,
            sizes,
        });
    }
    out
}

fn enum_sizes(fd: &OwnedFd, fourcc: u32) -> Vec<SizeInfo> {
    let mut out = Vec::new();
    for index in 0..64 {
        let mut size: sys::v4l2_frmsizeenum = sys::zeroed();
        size.index = index;
        size.pixel_format = fourcc;
        if sys::ioctl(fd.as_fd(), sys::VIDIOC_ENUM_FRAMESIZES, &mut size).is_err() {
            break;
        }
        let s = size.size;
        if size.type_ == sys::FRMSIZE_TYPE_DISCRETE {
            out.push(SizeInfo::Discrete {
                width: s[0],
                height: s[1],
                fps: enum_rates(fd, fourcc, s[0], s[1]),
            });
        } else {
            out.push(SizeInfo::Range {
                min: (s[0], s[3]),
                max: (s[1], s[4]),
                step: (s[2], s[5]),
            });
            break;
        }
    }
    out
}

fn enum_rates(fd: &OwnedFd, fourcc: u32, width: u32, height: u32) -> Vec<f64> {
    let mut out = Vec::new();
    for index in 0..32 {
        let mut ival: sys::v4l2_frmivalenum = sys::zeroed();
        ival.index = index;
        ival.pixel_format = fourcc;
        ival.width = width;
        ival.height = height;
        if sys::ioctl(fd.as_fd(), sys::VIDIOC_ENUM_FRAMEINTERVALS, &mut ival).is_err()
            || ival.type_ != sys::FRMIVAL_TYPE_DISCRETE
        {
            break;
        }
        let (num, den) = (ival.interval[0], ival.interval[1]);
        if num > 0 {
            out.push(f64::from(den) / f64::from(num));
        }
    }
    out
}

/// QUERYCAP and the formats (with sizes and rates on a camera) of one node.
pub fn query(path: &Path) -> std::io::Result<DeviceInfo> {
    let fd = open_node(path)?;
    let cap = querycap(&fd)?;
    let caps = device_caps(&cap);
    let mut info = DeviceInfo {
        path: path.to_owned(),
        driver: sys::text(&cap.driver),
        card: sys::text(&cap.card),
        bus: sys::text(&cap.bus_info),
        caps,
        capture_formats: Vec::new(),
        output_formats: Vec::new(),
    };
    let m2m = info.is_m2m();
    for (flag, ty) in [
        (sys::CAP_VIDEO_CAPTURE, sys::BUF_TYPE_VIDEO_CAPTURE),
        (sys::CAP_VIDEO_M2M, sys::BUF_TYPE_VIDEO_CAPTURE),
        (
            sys::CAP_VIDEO_CAPTURE_MPLANE,
            sys::BUF_TYPE_VIDEO_CAPTURE_MPLANE,
        ),
        (
            sys::CAP_VIDEO_M2M_MPLANE,
            sys::BUF_TYPE_VIDEO_CAPTURE_MPLANE,
        ),
    ] {
        if caps & flag != 0 && info.capture_formats.is_empty() {
            info.capture_formats = enum_formats(&fd, ty, !m2m);
        }
    }
    for (flag, ty) in [
        (sys::CAP_VIDEO_OUTPUT, sys::BUF_TYPE_VIDEO_OUTPUT),
        (sys::CAP_VIDEO_M2M, sys::BUF_TYPE_VIDEO_OUTPUT),
        (
            sys::CAP_VIDEO_OUTPUT_MPLANE,
            sys::BUF_TYPE_VIDEO_OUTPUT_MPLANE,
        ),
        (sys::CAP_VIDEO_M2M_MPLANE, sys::BUF_TYPE_VIDEO_OUTPUT_MPLANE),
    ] {
        if caps & flag != 0 && info.output_formats.is_empty() {
            info.output_formats = enum_formats(&fd, ty, false);
        }
    }
    Ok(info)
}

/// Every `/dev/videoN`, in numeric order.
pub fn video_nodes() -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let n = name.strip_prefix("video")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// Resolve a selector to a capture node.
pub fn find(selector: &Selector) -> anyhow::Result<PathBuf> {
    let matches = |info: &DeviceInfo| match selector {
        Selector::Path(_) => false,
        Selector::Name(name) => info.card.to_lowercase().contains(&name.to_lowercase()),
        Selector::Bus(bus) => info.bus == *bus,
    };
    if let Selector::Path(path) = selector {
        return Ok(path.clone());
    }
    let mut seen = Vec::new();
    for node in video_nodes() {
        let Ok(info) = query(&node) else { continue };
        if !info.is_capture() {
            continue;
        }
        if matches(&info) {
            return Ok(node);
        }
        seen.push(format!(
            "{} \"{}\" ({})",
            node.display(),
            info.card,
            info.bus
        ));
    }
    let what = match selector {
        Selector::Name(n) => format!("named like {n:?}"),
        Selector::Bus(b) => format!("on bus {b:?}"),
        Selector::Path(_) => unreachable!(),
    };
    if seen.is_empty() {
        anyhow::bail!("[video] no camera {what}: no V4L2 capture device is present (is it plugged in? `roomcast devices` lists what is there)")
    }
    anyhow::bail!(
        "[video] no camera {what}; the cameras present are: {}. Fix `device` in [video] (`roomcast devices` lists them)",
        seen.join(", ")
    )
}

/// NV12 with its two planes in two memory planes (V4L2_PIX_FMT_NV12M; multi-planar API only).
const NV12M: u32 = sys::fourcc(*b"NM12");
/// YU12 with its three planes in three memory planes (V4L2_PIX_FMT_YUV420M).
const YUV420M: u32 = sys::fourcc(*b"YM12");

/// The V4L2 formats a camera can deliver `pixel` in, preferred first: its own fourcc (every
/// plane in one buffer), then for NV12 and YU12 the variant with each plane in a memory plane
/// of its own, which some SoC capture paths offer alone.
pub fn capture_fourccs(pixel: PixelFormat) -> heapless::Vec<u32, 2> {
    let mut codes = heapless::Vec::new();
    let _ = codes.push(sys::fourcc(pixel.fourcc()));
    match pixel {
        PixelFormat::Nv12 => {
            let _ = codes.push(NV12M);
        }
        PixelFormat::Yu12 => {
            let _ = codes.push(YUV420M);
        }
        _ => {}
    }
    codes
}

/// The picture format a capture fourcc delivers (NV12M's pictures are NV12), if roomcast takes it.
pub fn pixel_of(fourcc: u32) -> Option<PixelFormat> {
    match fourcc {
        NV12M => Some(PixelFormat::Nv12),
        YUV420M => Some(PixelFormat::Yu12),
        _ => PixelFormat::from_fourcc(fourcc.to_le_bytes()),
    }
}

/// The format to capture in, from what the camera offers: the one `[video] format` asks for
/// (`wanted`), or else its own H.264 first (nothing to encode), then the raw formats the encoder
/// takes, then MJPEG (decoded in software on every frame: the last resort). NV12 and YU12 count
/// as offered in either memory layout (see [`capture_fourccs`]).
pub fn choose_format(offered: &[u32], wanted: Option<PixelFormat>) -> Result<PixelFormat, String> {
    let has = |p: PixelFormat| capture_fourccs(p).iter().any(|f| offered.contains(f));
    let list = || {
        offered
            .iter()
            .map(|&f| sys::fourcc_text(f))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(p) = wanted {
        // Asked for by name: another format would not be what the owner configured.
        return if has(p) {
            Ok(p)
        } else {
            Err(format!(
                "[video] format = \"{}\", but the camera does not offer {p} (it offers: {}); \
                 set [video] format to one it offers or to \"auto\"",
                p.config_name(),
                list()
            ))
        };
    }
    for p in [
        PixelFormat::H264,
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Yu12,
        PixelFormat::Mjpeg,
    ] {
        if has(p) {
            return Ok(p);
        }
    }
    let list = list();
    Err(format!(
        "the camera offers none of the formats roomcast takes (H264, YUYV, NV12 or NM12, YU12 or YM12, MJPG); it offers: {list}"
    ))
}

/// Where the planes of a raw picture sit in one single-planar V4L2 buffer: `(offset, length,
/// stride)` each, the planes following each other, each row `bytesperline` bytes (chroma rows of
/// YU12 half that). A camera's buffer and an M2M encoder's OUTPUT buffer share this layout.
pub fn packed_layout(
    format: PixelFormat,
    height: u32,
    bytesperline: u32,
) -> heapless::Vec<(usize, usize, usize), 3> {
    let (h, bpl) = (height as usize, bytesperline as usize);
    let ch = h.div_ceil(2);
    let layout: &[(usize, usize, usize)] = match format {
        PixelFormat::Yuyv => &[(0, bpl * h, bpl)],
        PixelFormat::Nv12 => &[(0, bpl * h, bpl), (bpl * h, bpl * ch, bpl)],
        PixelFormat::Yu12 => &[
            (0, bpl * h, bpl),
            (bpl * h, bpl / 2 * ch, bpl / 2),
            (bpl * h + bpl / 2 * ch, bpl / 2 * ch, bpl / 2),
        ],
        PixelFormat::Mjpeg | PixelFormat::H264 => &[],
    };
    heapless::Vec::from_slice(layout).expect("at most three planes")
}

/// Where one plane of a picture sits: in which of the buffer's memory planes, from which
/// byte, how many bytes, and `stride` bytes per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneSpan {
    pub memory: usize,
    pub offset: usize,
    pub len: usize,
    pub stride: usize,
}

/// Where the planes of a raw `format` picture, `height` rows, sit in a buffer of the memory
/// planes the driver set (`planes`, one per memory plane, from S_FMT): all in the one memory
/// plane as [`packed_layout`] lays them out (the single-planar API, and NV12/YU12/YUYV through
/// the multi-planar one), or each picture plane in a memory plane of its own with that memory
/// plane's `bytesperline` (NV12M, YUV420M). A stride below the row's width is raised to it,
/// as a driver that leaves `bytesperline` 0 means "packed". Anything else is an error naming it.
pub fn plane_layout(
    format: PixelFormat,
    width: u32,
    height: u32,
    planes: &[PlaneFormat],
) -> Result<heapless::Vec<PlaneSpan, 3>, String> {
    let min_stride = |i: usize| {
        format
            .plane_geometry(i, width, height)
            .map_or(0, |(_, row)| row)
    };
    match planes {
        [only] => Ok(
            packed_layout(format, height, only.bytesperline.max(min_stride(0)))
                .iter()
                .map(|&(offset, len, stride)| PlaneSpan {
                    memory: 0,
                    offset,
                    len,
                    stride,
                })
                .collect(),
        ),
        _ if planes.len() == format.planes() && !format.is_compressed() => Ok(planes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let rows = format.plane_geometry(i, width, height).map_or(0, |g| g.0);
                let stride = p.bytesperline.max(min_stride(i)) as usize;
                PlaneSpan {
                    memory: i,
                    offset: 0,
                    len: stride * rows as usize,
                    stride,
                }
            })
            .collect()),
        _ => Err(format!(
            "the driver lays {format} out over {} memory planes; roomcast takes one, or one per picture plane ({})",
            planes.len(),
            format.planes()
        )),
    }
}

/// A captured buffer as a frame: `memory` holds the payload of each of the buffer's memory
/// planes, `layout` says where the picture's planes sit in them (see [`plane_layout`]); a
/// compressed frame is memory plane 0.
pub fn frame_from_planes(
    format: PixelFormat,
    width: u32,
    height: u32,
    layout: &[PlaneSpan],
    memory: &[Bytes],
    capture: Duration,
) -> anyhow::Result<VideoFrame> {
    if format.is_compressed() {
        let data = memory.first().cloned().unwrap_or_default();
        anyhow::ensure!(
            !data.is_empty(),
            "the camera delivered an empty {format} frame"
        );
        return Ok(VideoFrame::compressed(format, width, height, data, capture));
    }
    let mut planes = heapless::Vec::new();
    for span in layout {
        let data = memory.get(span.memory).cloned().unwrap_or_default();
        anyhow::ensure!(
            span.offset < data.len(),
            "{format} {width}x{height}: memory plane {} holds {} bytes, too few for its planes",
            span.memory,
            data.len()
        );
        let end = (span.offset + span.len).min(data.len());
        let _ = planes.push(Plane {
            data: data.slice(span.offset..end),
            stride: span.stride,
        });
    }
    let frame = VideoFrame {
        width,
        height,
        format,
        planes,
        capture,
        dmabuf: None,
    };
    frame.validate()?;
    Ok(frame)
}

/// A buffer timestamp as a capture time: the driver's own when it stamps on CLOCK_MONOTONIC
/// (every driver since Linux 3.10), else the time it was dequeued.
pub fn capture_time(flags: u32, timestamp: libc::timeval, dequeued: Duration) -> Duration {
    let stamped = Duration::new(timestamp.tv_sec as u64, (timestamp.tv_usec as u32) * 1000);
    if flags & sys::BUF_FLAG_TIMESTAMP_MASK == sys::BUF_FLAG_TIMESTAMP_MONOTONIC
        && !stamped.is_zero()
        && stamped <= dequeued
    {
        stamped
    } else {
        dequeued
    }
}

/// A captured buffer lent out instead of copied: it stays dequeued until the frame's last
/// clone is dropped, which hands its index back to the camera to queue again. Shared by the
/// leases of all its memory planes, so it comes back once, after the last of them.
struct Lent {
    index: u32,
    back: std::sync::mpsc::Sender<u32>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        // The camera may be gone already; then the buffer simply stays with the driver.
        let _ = self.back.send(self.index);
    }
}

/// The payload of one memory plane of a lent buffer: its bytes stay valid (the buffer stays
/// dequeued, the mapping alive) while this lives.
struct Lease {
    map: Arc<Mapping>,
    offset: usize,
    used: usize,
    _buffer: Arc<Lent>,
}

impl AsRef<[u8]> for Lease {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the driver filled `used` bytes from `offset` (offset + used ≤ len, clamped
        // at dequeue), and the buffer is not queued again before this lease is dropped.
        unsafe {
            std::slice::from_raw_parts((self.map.ptr as *const u8).add(self.offset), self.used)
        }
    }
}

/// A V4L2 camera, streaming with mmap buffers.
pub struct Camera {
    path: PathBuf,
    fd: OwnedFd,
    format: VideoFormat,
    api: Api,
    /// The capture fourcc as the driver set it (NM12 where NV12 comes in two memory planes).
    fourcc: u32,
    /// The memory planes of each buffer (1, or one per picture plane for NV12M/YUV420M).
    memory_planes: usize,
    /// Where each picture plane sits in the memory planes (empty for a compressed format).
    layout: heapless::Vec<PlaneSpan, 3>,
    /// Each buffer's mapping, one per memory plane.
    buffers: Vec<heapless::Vec<Arc<Mapping>, MAX_PLANES>>,
    /// Lend buffers out (see [`VideoSource::share_buffers`]) instead of copying frames.
    share: bool,
    /// The DMABUF of each buffer, where the driver exports them (share mode).
    dmabufs: Vec<Arc<OwnedFd>>,
    /// Lent buffers come back here when their frames are dropped.
    returned: (std::sync::mpsc::Sender<u32>, std::sync::mpsc::Receiver<u32>),
    streaming: bool,
    /// How long a stalled camera may stay silent before capture fails.
    timeout: Duration,
}

/// Buffers the driver cycles through: enough that one is always being filled while we copy.
const BUFFERS: u32 = 4;
/// When buffers are lent to an encoder that holds up to four of them: four more to capture into.
const SHARED_BUFFERS: u32 = 8;

impl Camera {
    /// Open the camera `device` names and negotiate `width`×`height` at `fps`, in `format` when
    /// the config names one (else the preferred one the camera offers, see [`choose_format`]).
    pub fn open(
        device: &str,
        width: u32,
        height: u32,
        fps: u32,
        format: Option<PixelFormat>,
    ) -> anyhow::Result<Self> {
        let path = find(&Selector::parse(device))?;
        let shown = path.display().to_string();
        let fd = open_node(&path).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "is the camera plugged in? `roomcast devices` lists the cameras present"
                }
                std::io::ErrorKind::PermissionDenied => "add the service user to the `video` group",
                _ => "check the device and its driver (dmesg)",
            };
            anyhow::anyhow!("[video] camera {shown}: {e}; {hint}")
        })?;
        let cap = querycap(&fd)
            .with_context(|| format!("[video] {shown} is not a V4L2 device (VIDIOC_QUERYCAP)"))?;
        let caps = device_caps(&cap);
        let card = sys::text(&cap.card);
        let api = Api::for_capture(caps).ok_or_else(|| {
            anyhow::anyhow!("[video] {shown} ({card}) cannot capture video: it is not a camera node (`roomcast devices` lists the cameras)")
        })?;
        anyhow::ensure!(
            caps & sys::CAP_STREAMING != 0,
            "[video] {shown} ({card}) does not support streaming I/O"
        );
        let offered: Vec<u32> = enum_formats(&fd, api.capture_type(), false)
            .iter()
            .map(|f| f.fourcc)
            .collect();
        let pixel = choose_format(&offered, format)
            .map_err(|e| anyhow::anyhow!("[video] {shown} ({card}): {e}"))?;
        let fourcc = capture_fourccs(pixel)
            .into_iter()
            .find(|f| offered.contains(f))
            .expect("choose_format picks an offered format");
        if pixel == PixelFormat::Mjpeg {
            // Once per open: the cost is on every frame, and a board owner can often avoid it.
            tracing::warn!(
                "[video] {shown} ({card}) is captured as MJPEG: every frame is decoded in software \
                 before the H.264 encode, which costs more CPU than any other format (see \
                 `encoder CPU ms/frame` in the media_stats events). A camera or mode with YUYV, \
                 NV12 or H.264 avoids it"
            );
        }

        let mut fmt: sys::v4l2_format = sys::zeroed();
        fmt.type_ = api.capture_type();
        queue::set_format(&mut fmt, api, fourcc, width, height, 0);
        sys::ioctl(fd.as_fd(), sys::VIDIOC_S_FMT, &mut fmt).with_context(|| {
            format!(
                "[video] {shown}: setting {} {width}x{height} (VIDIOC_S_FMT, {} API)",
                sys::fourcc_text(fourcc),
                api.as_str()
            )
        })?;
        let set = queue::format_of(&fmt, api);
        let got = pixel_of(set.fourcc).ok_or_else(|| {
            anyhow::anyhow!(
                "[video] {shown}: asked for {}, the driver chose {}",
                sys::fourcc_text(fourcc),
                sys::fourcc_text(set.fourcc)
            )
        })?;
        if (set.width, set.height) != (width, height) {
            tracing::warn!(
                "[video] {shown} cannot capture {width}x{height}; it gives {}x{}, which is used instead",
                set.width,
                set.height
            );
        }
        let memory_planes = set.planes.len();
        anyhow::ensure!(
            (1..=MAX_PLANES).contains(&memory_planes),
            "[video] {shown} ({card}): the driver gives {} in {memory_planes} memory planes; \
             roomcast captures 1 to {MAX_PLANES}. Set [video] format to another format it offers ({})",
            sys::fourcc_text(set.fourcc),
            offered.iter().map(|&f| sys::fourcc_text(f)).collect::<Vec<_>>().join(", ")
        );
        let layout = if got.is_compressed() {
            anyhow::ensure!(
                memory_planes == 1,
                "[video] {shown} ({card}): {got} in {memory_planes} memory planes; a compressed frame is one"
            );
            heapless::Vec::new()
        } else {
            plane_layout(got, set.width, set.height, &set.planes)
                .map_err(|e| anyhow::anyhow!("[video] {shown} ({card}): {e}"))?
        };

        // Frame rate: only where the driver lets us set it.
        let mut parm: sys::v4l2_streamparm = sys::zeroed();
        parm.type_ = api.capture_type();
        let mut actual_fps = fps;
        if sys::ioctl(fd.as_fd(), sys::VIDIOC_G_PARM, &mut parm).is_ok() {
            // SAFETY: G_PARM on a capture queue fills in `capture`.
            let capture = unsafe { parm.parm.capture };
            if capture.capability & sys::CAP_TIMEPERFRAME != 0 {
                parm.parm.capture.timeperframe = sys::v4l2_fract {
                    numerator: 1,
                    denominator: fps,
                };
                if sys::ioctl(fd.as_fd(), sys::VIDIOC_S_PARM, &mut parm).is_ok() {
                    // SAFETY: as above.
                    let t = unsafe { parm.parm.capture.timeperframe };
                    if let Some(rounded) =
                        (t.denominator + t.numerator / 2).checked_div(t.numerator)
                    {
                        actual_fps = rounded;
                    }
                }
            }
        }
        if actual_fps != fps {
            tracing::warn!("[video] {shown} runs at {actual_fps} fps, not the {fps} configured");
        }
        let memory_note = if memory_planes > 1 {
            format!(
                " ({}: one memory plane per picture plane)",
                sys::fourcc_text(set.fourcc)
            )
        } else {
            String::new()
        };
        tracing::info!(
            "camera {shown} ({card}): {got} {}x{} at {actual_fps} fps, {} API{memory_note}",
            set.width,
            set.height,
            api.as_str()
        );
        Ok(Self {
            path,
            fd,
            format: VideoFormat {
                width: set.width,
                height: set.height,
                fps: actual_fps.max(1),
                pixel: got,
            },
            api,
            fourcc: set.fourcc,
            memory_planes,
            layout,
            buffers: Vec::new(),
            share: false,
            dmabufs: Vec::new(),
            returned: std::sync::mpsc::channel(),
            streaming: false,
            timeout: Duration::from_secs(10),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The buffer API the camera is captured with.
    pub fn api(&self) -> Api {
        self.api
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let shown = self.path.display().to_string();
        let ty = self.api.capture_type();
        let mut req = sys::v4l2_requestbuffers {
            count: if self.share { SHARED_BUFFERS } else { BUFFERS },
            type_: ty,
            memory: sys::MEMORY_MMAP,
            ..sys::zeroed()
        };
        sys::ioctl(self.fd.as_fd(), sys::VIDIOC_REQBUFS, &mut req)
            .with_context(|| format!("[video] {shown}: mmap buffers (VIDIOC_REQBUFS)"))?;
        anyhow::ensure!(req.count > 0, "[video] {shown}: the driver gave no buffers");
        for index in 0..req.count {
            let mut buf = self.buffer(index);
            buf.ioctl(&self.fd, sys::VIDIOC_QUERYBUF)
                .with_context(|| format!("[video] {shown}: VIDIOC_QUERYBUF {index}"))?;
            let mut maps = heapless::Vec::new();
            for plane in 0..self.memory_planes {
                let map = queue::map(&self.fd, &buf, plane, false).with_context(|| {
                    format!("[video] {shown}: mmap of buffer {index} plane {plane}")
                })?;
                let _ = maps.push(Arc::new(map));
            }
            self.buffers.push(maps);
            // Once one export failed, none is tried again: every frame has a DMABUF, or none.
            if self.share && self.dmabufs.len() == index as usize {
                match queue::export(&self.fd, ty, index, 0) {
                    Ok(fd) => self.dmabufs.push(Arc::new(fd)),
                    Err(e) => {
                        tracing::info!("[video] {shown}: frames are lent without a DMABUF: the driver exports none (VIDIOC_EXPBUF, {} API: {e})", self.api.as_str());
                        self.dmabufs.clear();
                    }
                }
            }
            buf.ioctl(&self.fd, sys::VIDIOC_QBUF)
                .with_context(|| format!("[video] {shown}: VIDIOC_QBUF {index}"))?;
        }
        queue::set_streaming(&self.fd, ty, true)
            .with_context(|| format!("[video] {shown}: VIDIOC_STREAMON"))?;
        self.streaming = true;
        Ok(())
    }

    fn buffer(&self, index: u32) -> Buf {
        Buf::with_planes(self.api, self.api.capture_type(), index, self.memory_planes)
    }

    fn requeue(&self, index: u32) -> anyhow::Result<()> {
        self.buffer(index)
            .ioctl(&self.fd, sys::VIDIOC_QBUF)
            .map_err(|e| capture_io_error(&self.path, "VIDIOC_QBUF", e))
    }

    /// Wait for the device or the stop fd. Ok(false) once stopped.
    fn wait(&self, stop: &StopSignal) -> anyhow::Result<bool> {
        let stop_fd = stop.fd()?;
        let shown = self.path.display();
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop_fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if stop.is_stopped() {
            return Ok(false);
        }
        let ready = super::poll_fds(&mut fds, self.timeout)
            .map_err(|e| anyhow::anyhow!("[video] {shown}: poll: {e}"))?;
        anyhow::ensure!(
            ready,
            "[video] {shown}: no frame for {} s: the camera stalled",
            self.timeout.as_secs()
        );
        if fds[1].revents != 0 || stop.is_stopped() {
            return Ok(false);
        }
        let ev = fds[0].revents;
        if ev & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 && ev & libc::POLLIN == 0 {
            anyhow::bail!("[video] {shown}: the camera went away (unplugged?)");
        }
        Ok(true)
    }
}

/// A capture ioctl's error. A camera unplugged mid-stream fails whichever ioctl comes next
/// (DQBUF, or the QBUF that returns a buffer) with ENODEV: every one of them is reported as
/// the camera having gone away, so the owner reads one cause however the race fell.
fn capture_io_error(path: &Path, op: &str, e: std::io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) => anyhow::anyhow!(
            "[video] {}: the camera went away (unplugged?): {op}: {e}",
            path.display()
        ),
        _ => anyhow::anyhow!("[video] {}: {op}: {e}", path.display()),
    }
}

impl VideoSource for Camera {
    fn format(&self) -> VideoFormat {
        self.format
    }

    fn next_frame(&mut self, stop: &StopSignal) -> anyhow::Result<Option<VideoFrame>> {
        if !self.streaming {
            self.start()?;
        }
        loop {
            // Lent buffers whose frames are gone go back to the driver first.
            while let Ok(index) = self.returned.1.try_recv() {
                self.requeue(index)?;
            }
            if !self.wait(stop)? {
                return Ok(None);
            }
            let mut buf = self.buffer(0);
            match buf.ioctl(&self.fd, sys::VIDIOC_DQBUF) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(capture_io_error(&self.path, "VIDIOC_DQBUF", e)),
            }
            let dequeued = clock::monotonic_now();
            let capture = capture_time(buf.buf.flags, buf.buf.timestamp, dequeued);
            let index = buf.buf.index;
            let Some(maps) = self
                .buffers
                .get(index as usize)
                .filter(|_| buf.buf.flags & sys::BUF_FLAG_ERROR == 0)
            else {
                self.requeue(index)?;
                tracing::debug!(
                    "[video] {}: a corrupted buffer, skipped",
                    self.path.display()
                );
                continue;
            };
            // No copy when lending: the frame's planes are the buffer, which stays ours until
            // the frame's last clone is dropped.
            let lent = self.share.then(|| {
                Arc::new(Lent {
                    index,
                    back: self.returned.0.clone(),
                })
            });
            let mut memory: heapless::Vec<Bytes, MAX_PLANES> = heapless::Vec::new();
            for (plane, map) in maps.iter().enumerate() {
                let offset = buf.data_offset(plane).min(map.len);
                let used = buf.bytesused(plane).min(map.len - offset);
                let data = match &lent {
                    Some(lent) => Bytes::from_owner(Lease {
                        map: map.clone(),
                        offset,
                        used,
                        _buffer: lent.clone(),
                    }),
                    // SAFETY: the driver filled `used` bytes from `offset` of this mapping and
                    // hands it to us until the QBUF below; the copy ends before that.
                    None => Bytes::copy_from_slice(unsafe {
                        std::slice::from_raw_parts((map.ptr as *const u8).add(offset), used)
                    }),
                };
                let _ = memory.push(data);
            }
            if lent.is_none() {
                self.requeue(index)?;
            }
            let f = self.format;
            let mut frame =
                frame_from_planes(f.pixel, f.width, f.height, &self.layout, &memory, capture)?;
            if !self.dmabufs.is_empty() && buf.data_offset(0) != 0 {
                // An importer reads a DMABUF from its first byte, so a picture that starts
                // after a driver's header (vivid's multi-planar YUYV has 128 bytes) would be
                // coded shifted: the frames go without their DMABUF and the encoder copies.
                tracing::info!(
                    "[video] {}: the driver puts {} bytes before each picture (data_offset), which an encoder importing the buffer would code as picture: frames are lent without their DMABUF, so the encoder copies them",
                    self.path.display(),
                    buf.data_offset(0)
                );
                self.dmabufs.clear();
            }
            frame.dmabuf = self.dmabufs.get(index as usize).cloned();
            return Ok(Some(frame));
        }
    }

    /// A camera that delivers H.264 has its encoder behind the same node: its codec controls
    /// (FORCE_KEY_FRAME, BITRATE, ...), where the driver has them (see [`controls`]).
    fn encoder_controls(
        &mut self,
        start_bitrate_bps: u32,
    ) -> Option<Box<dyn super::CameraEncoderControls>> {
        if self.format.pixel != PixelFormat::H264 {
            return None;
        }
        let what = format!("camera {}", self.path.display());
        // A duplicate of the camera's fd: the controls live in the passthrough encoder, which
        // the capture thread drives next to this camera; both close with the pipeline.
        let fd = match self.fd.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!("{what}: no access to its encoder's controls (dup: {e}); keyframe requests wait for its periodic IDRs");
                return None;
            }
        };
        let f = self.format;
        let target = controls::CodecTarget {
            width: f.width,
            height: f.height,
            fps: f.fps,
            bitrate_bps: start_bitrate_bps,
            coded: sys::fourcc(*b"H264"),
        };
        Some(Box::new(controls::CameraEncoder::open(fd, what, &target)))
    }

    fn share_buffers(&mut self) -> Option<u32> {
        if self.streaming || self.format.pixel.is_compressed() {
            return None;
        }
        if self.memory_planes > 1 {
            // An encoder imports one DMABUF per picture; these pictures span several.
            tracing::info!(
                "[video] {}: {} keeps each picture plane in a buffer of its own, so pictures are copied to the encoder, not lent as one DMABUF",
                self.path.display(),
                sys::fourcc_text(self.fourcc)
            );
            return None;
        }
        self.share = true;
        // Bytes per row of the first plane: what an encoder importing the buffers lays out.
        Some(self.layout.first().map_or(0, |p| p.stride as u32))
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        if self.streaming {
            let _ = queue::set_streaming(&self.fd, self.api.capture_type(), false);
        }
        // The mappings are unmapped before the fd closes (fields drop after this), except those
        // of frames still lent out, which go with their last clone.
        self.buffers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(list: &[&[u8; 4]]) -> Vec<u32> {
        list.iter().map(|c| sys::fourcc(**c)).collect()
    }

    #[test]
    fn selectors() {
        assert_eq!(
            Selector::parse("/dev/video2"),
            Selector::Path("/dev/video2".into())
        );
        assert_eq!(
            Selector::parse("name: HD Pro Webcam"),
            Selector::Name("HD Pro Webcam".into())
        );
        assert_eq!(
            Selector::parse("bus:usb-0000:01:00.0-1.2"),
            Selector::Bus("usb-0000:01:00.0-1.2".into())
        );
    }

    #[test]
    fn format_preference_h264_then_raw_then_mjpeg() {
        assert_eq!(
            choose_format(&codes(&[b"MJPG", b"YUYV", b"H264"]), None),
            Ok(PixelFormat::H264)
        );
        assert_eq!(
            choose_format(&codes(&[b"MJPG", b"NV12", b"YUYV"]), None),
            Ok(PixelFormat::Yuyv)
        );
        assert_eq!(
            choose_format(&codes(&[b"YU12", b"NV12"]), None),
            Ok(PixelFormat::Nv12)
        );
        assert_eq!(
            choose_format(&codes(&[b"MJPG"]), None),
            Ok(PixelFormat::Mjpeg)
        );
        let err = choose_format(&codes(&[b"RGB3", b"BA81"]), None).unwrap_err();
        assert!(err.contains("RGB3, BA81"), "{err}");
    }

    #[test]
    fn a_configured_format_wins_over_the_preference_or_names_the_fix() {
        let offered = codes(&[b"YUYV", b"NV12", b"H264"]);
        assert_eq!(
            choose_format(&offered, Some(PixelFormat::Nv12)),
            Ok(PixelFormat::Nv12)
        );
        assert_eq!(
            choose_format(&offered, Some(PixelFormat::Yuyv)),
            Ok(PixelFormat::Yuyv)
        );
        let err = choose_format(&offered, Some(PixelFormat::Yu12)).unwrap_err();
        assert!(
            err.contains("format = \"yu12\"")
                && err.contains("YUYV, NV12, H264")
                && err.contains("\"auto\""),
            "{err}"
        );
    }

    /// A frame from one buffer with all its planes in one memory plane of `bytesperline` rows.
    fn frame_from_buffer(
        format: PixelFormat,
        width: u32,
        height: u32,
        bytesperline: u32,
        data: Bytes,
        capture: Duration,
    ) -> anyhow::Result<VideoFrame> {
        let one = [PlaneFormat {
            bytesperline,
            sizeimage: data.len() as u32,
        }];
        let layout = plane_layout(format, width, height, &one).map_err(anyhow::Error::msg)?;
        frame_from_planes(format, width, height, &layout, &[data], capture)
    }

    #[test]
    fn buffers_become_planes_with_the_driver_stride() {
        let t = Duration::from_millis(5);
        // NV12 640x480 with rows padded to 704.
        let data = Bytes::from(vec![0u8; 704 * 480 * 3 / 2]);
        let f = frame_from_buffer(PixelFormat::Nv12, 640, 480, 704, data, t).unwrap();
        assert_eq!(f.planes.len(), 2);
        assert_eq!(f.planes[0].stride, 704);
        assert_eq!(f.planes[1].data.len(), 704 * 240);
        assert_eq!(f.capture, t);
        // YU12: chroma rows are half the luma stride.
        let data = Bytes::from(vec![0u8; 640 * 480 * 3 / 2]);
        let f = frame_from_buffer(PixelFormat::Yu12, 640, 480, 640, data, t).unwrap();
        assert_eq!(
            f.planes.iter().map(|p| p.stride).collect::<Vec<_>>(),
            [640, 320, 320]
        );
        // YUYV, one plane.
        let data = Bytes::from(vec![0u8; 1280 * 480]);
        let f = frame_from_buffer(PixelFormat::Yuyv, 640, 480, 1280, data, t).unwrap();
        assert_eq!(f.planes.len(), 1);
        // A short buffer is an error naming the sizes, not a panic.
        let err = frame_from_buffer(
            PixelFormat::Yuyv,
            640,
            480,
            1280,
            Bytes::from(vec![0u8; 1000]),
            t,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("640x480"), "{err:#}");
    }

    /// The driver's answer to S_FMT on a multi-planar queue: `planes` (bytesperline,
    /// sizeimage) per memory plane.
    fn mplane_answer(
        fourcc: &[u8; 4],
        width: u32,
        height: u32,
        planes: &[(u32, u32)],
    ) -> sys::v4l2_format {
        let mut fmt: sys::v4l2_format = sys::zeroed();
        fmt.type_ = sys::BUF_TYPE_VIDEO_CAPTURE_MPLANE;
        let mut pix_mp = sys::v4l2_pix_format_mplane {
            width,
            height,
            pixelformat: sys::fourcc(*fourcc),
            num_planes: planes.len() as u8,
            ..sys::zeroed()
        };
        for (i, &(bytesperline, sizeimage)) in planes.iter().enumerate() {
            pix_mp.plane_fmt[i] = sys::v4l2_plane_pix_format {
                sizeimage,
                bytesperline,
                reserved: [0; 6],
            };
        }
        fmt.fmt.pix_mp = pix_mp;
        fmt
    }

    #[test]
    fn a_multi_planar_format_in_one_memory_plane_is_laid_out_like_a_single_planar_one() {
        // NV12 640x360 through the MPLANE API (vivid multiplanar=2, most SoC paths), rows
        // padded to 768 bytes: the chroma plane follows the padded luma plane.
        let set = queue::format_of(
            &mplane_answer(b"NV12", 640, 360, &[(768, 768 * 540)]),
            Api::MultiPlanar,
        );
        assert_eq!(pixel_of(set.fourcc), Some(PixelFormat::Nv12));
        let layout = plane_layout(PixelFormat::Nv12, set.width, set.height, &set.planes).unwrap();
        assert_eq!(
            layout.as_slice(),
            [
                PlaneSpan {
                    memory: 0,
                    offset: 0,
                    len: 768 * 360,
                    stride: 768
                },
                PlaneSpan {
                    memory: 0,
                    offset: 768 * 360,
                    len: 768 * 180,
                    stride: 768
                },
            ]
        );
        // The same as the single-planar layout of those rows.
        let single = packed_layout(PixelFormat::Nv12, 360, 768);
        assert!(layout
            .iter()
            .zip(&single)
            .all(
                |(span, &(offset, len, stride))| (span.offset, span.len, span.stride)
                    == (offset, len, stride)
            ));
        // A driver that leaves bytesperline 0 means packed rows.
        let set = queue::format_of(
            &mplane_answer(b"YUYV", 640, 360, &[(0, 1280 * 360)]),
            Api::MultiPlanar,
        );
        let layout = plane_layout(PixelFormat::Yuyv, 640, 360, &set.planes).unwrap();
        assert_eq!(layout[0].stride, 1280);
    }

    #[test]
    fn one_memory_plane_per_picture_plane_takes_each_planes_own_stride() {
        // NV12M 640x480, luma rows padded to 704, chroma rows to 672.
        let set = queue::format_of(
            &mplane_answer(b"NM12", 640, 480, &[(704, 704 * 480), (672, 672 * 240)]),
            Api::MultiPlanar,
        );
        assert_eq!(pixel_of(set.fourcc), Some(PixelFormat::Nv12));
        let layout = plane_layout(PixelFormat::Nv12, 640, 480, &set.planes).unwrap();
        assert_eq!(
            layout.as_slice(),
            [
                PlaneSpan {
                    memory: 0,
                    offset: 0,
                    len: 704 * 480,
                    stride: 704
                },
                PlaneSpan {
                    memory: 1,
                    offset: 0,
                    len: 672 * 240,
                    stride: 672
                },
            ]
        );
        // Each picture plane comes from its own memory plane.
        let memory = [
            Bytes::from(vec![1u8; 704 * 480]),
            Bytes::from(vec![2u8; 672 * 240]),
        ];
        let f = frame_from_planes(
            PixelFormat::Nv12,
            640,
            480,
            &layout,
            &memory,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(f.planes[0].data.len(), 704 * 480);
        assert!(f.planes[1].data.iter().all(|&b| b == 2));
        assert_eq!((f.planes[0].stride, f.planes[1].stride), (704, 672));
        // YUV420M: three memory planes, the chroma ones with half-width rows.
        let set = queue::format_of(
            &mplane_answer(
                b"YM12",
                640,
                480,
                &[(640, 640 * 480), (320, 320 * 240), (320, 320 * 240)],
            ),
            Api::MultiPlanar,
        );
        let layout = plane_layout(PixelFormat::Yu12, 640, 480, &set.planes).unwrap();
        assert_eq!(
            layout
                .iter()
                .map(|s| (s.memory, s.stride, s.len))
                .collect::<Vec<_>>(),
            [
                (0, 640, 640 * 480),
                (1, 320, 320 * 240),
                (2, 320, 320 * 240)
            ]
        );
        // A short memory plane is an error naming it.
        let err = frame_from_planes(
            PixelFormat::Nv12,
            640,
            480,
            &plane_layout(
                PixelFormat::Nv12,
                640,
                480,
                &[PlaneFormat {
                    bytesperline: 640,
                    sizeimage: 0,
                }; 2],
            )
            .unwrap(),
            &[Bytes::from(vec![0u8; 640 * 480]), Bytes::new()],
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("memory plane 1"), "{err:#}");
        // Memory planes that match neither layout are refused with the counts.
        let err =
            plane_layout(PixelFormat::Nv12, 640, 480, &[PlaneFormat::default(); 3]).unwrap_err();
        assert!(
            err.contains("3 memory planes") && err.contains("(2)"),
            "{err}"
        );
    }

    #[test]
    fn nv12_and_yu12_count_as_offered_in_their_multi_memory_plane_variants() {
        // A SoC path that offers 4:2:0 only as NV12M: NV12, captured as NM12.
        assert_eq!(
            choose_format(&codes(&[b"NM12", b"RGB3"]), None),
            Ok(PixelFormat::Nv12)
        );
        assert_eq!(
            choose_format(&codes(&[b"YM12"]), Some(PixelFormat::Yu12)),
            Ok(PixelFormat::Yu12)
        );
        // The one-buffer variant is preferred where both are offered.
        assert_eq!(
            capture_fourccs(PixelFormat::Nv12).as_slice(),
            codes(&[b"NV12", b"NM12"])
        );
        assert_eq!(
            capture_fourccs(PixelFormat::Yuyv).as_slice(),
            codes(&[b"YUYV"])
        );
        assert_eq!(pixel_of(sys::fourcc(*b"YM12")), Some(PixelFormat::Yu12));
        assert_eq!(pixel_of(sys::fourcc(*b"NV16")), None);
        let err = choose_format(&codes(&[b"NV16"]), None).unwrap_err();
        assert!(
            err.contains("NV12 or NM12") && err.contains("NV16"),
            "{err}"
        );
    }

    #[test]
    fn an_unplugged_camera_is_named_as_gone_whichever_ioctl_saw_it() {
        let path = Path::new("/dev/video0");
        for op in ["VIDIOC_QBUF", "VIDIOC_DQBUF"] {
            let gone = capture_io_error(path, op, std::io::Error::from_raw_os_error(libc::ENODEV));
            let text = gone.to_string();
            assert!(
                text.contains("/dev/video0: the camera went away (unplugged?)"),
                "{text}"
            );
            assert!(text.contains(op), "{text}");
        }
        let other = capture_io_error(
            path,
            "VIDIOC_QBUF",
            std::io::Error::from_raw_os_error(libc::EINVAL),
        );
        assert!(!other.to_string().contains("went away"), "{other}");
    }

    #[test]
    fn capture_time_is_the_monotonic_buffer_stamp() {
        let tv = libc::timeval {
            tv_sec: 12,
            tv_usec: 345_678,
        };
        let dq = Duration::from_secs(13);
        assert_eq!(
            capture_time(sys::BUF_FLAG_TIMESTAMP_MONOTONIC, tv, dq),
            Duration::new(12, 345_678_000)
        );
        // Not monotonic (a realtime or unknown stamp), or zero: the dequeue time.
        assert_eq!(capture_time(0, tv, dq), dq);
        let zero = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        assert_eq!(
            capture_time(sys::BUF_FLAG_TIMESTAMP_MONOTONIC, zero, dq),
            dq
        );
    }

    #[test]
    fn ioctl_numbers_match_the_kernel() {
        // From linux/videodev2.h on a 64-bit target.
        assert_eq!(sys::VIDIOC_QUERYCAP, 0x8068_5600);
        assert_eq!(sys::VIDIOC_STREAMON, 0x4004_5612);
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(sys::VIDIOC_S_FMT, 0xc0d0_5605);
            assert_eq!(sys::VIDIOC_DQBUF, 0xc058_5611);
            assert_eq!(sys::VIDIOC_S_EXT_CTRLS, 0xc020_5648);
        }
        assert_eq!(sys::VIDIOC_ENCODER_CMD, 0xc028_564d);
    }

    /// Anonymous memory standing in for a driver's buffer: `len` bytes of `fill`.
    fn fake_mapping(len: usize, fill: u8) -> Arc<Mapping> {
        // SAFETY: a fresh private anonymous mapping of `len` bytes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        // SAFETY: the mapping is `len` bytes long and ours.
        unsafe { std::ptr::write_bytes(ptr as *mut u8, fill, len) };
        Arc::new(Mapping { ptr, len })
    }

    #[test]
    fn a_lent_buffer_comes_back_once_when_its_last_clone_is_dropped() {
        let (back, returned) = std::sync::mpsc::channel();
        let data = Bytes::from_owner(Lease {
            map: fake_mapping(64, 7),
            offset: 0,
            used: 48,
            _buffer: Arc::new(Lent { index: 3, back }),
        });
        let frame = frame_from_buffer(PixelFormat::Yuyv, 4, 4, 12, data, Duration::ZERO).unwrap();
        assert_eq!(frame.planes[0].data.len(), 48);
        assert!(frame.planes[0].data.iter().all(|&b| b == 7));
        let copy = frame.clone();
        drop(frame);
        assert!(
            returned.try_recv().is_err(),
            "a clone still holds the buffer"
        );
        drop(copy);
        assert_eq!(returned.try_recv(), Ok(3));
        assert!(returned.try_recv().is_err(), "returned once");
    }

    #[test]
    fn a_lent_buffer_of_several_memory_planes_comes_back_after_its_last_plane() {
        // NV12M 4x4: a luma and a chroma memory plane, the chroma payload after a 16-byte header.
        let (back, returned) = std::sync::mpsc::channel();
        let buffer = Arc::new(Lent { index: 5, back });
        let luma = Bytes::from_owner(Lease {
            map: fake_mapping(16, 1),
            offset: 0,
            used: 16,
            _buffer: buffer.clone(),
        });
        let chroma = Bytes::from_owner(Lease {
            map: fake_mapping(32, 2),
            offset: 16,
            used: 8,
            _buffer: buffer,
        });
        let one = PlaneFormat {
            bytesperline: 4,
            sizeimage: 16,
        };
        let layout = plane_layout(PixelFormat::Nv12, 4, 4, &[one, one]).unwrap();
        let frame = frame_from_planes(
            PixelFormat::Nv12,
            4,
            4,
            &layout,
            &[luma, chroma],
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(frame.planes[1].data.len(), 8);
        let chroma_only = frame.planes[1].data.clone();
        drop(frame);
        assert!(
            returned.try_recv().is_err(),
            "the chroma plane is still held"
        );
        drop(chroma_only);
        assert_eq!(returned.try_recv(), Ok(5));
        assert!(returned.try_recv().is_err(), "returned once");
    }

    #[test]
    fn a_missing_camera_is_named_with_the_fix() {
        let err = Camera::open("/dev/video-roomcast-absent", 640, 480, 30, None)
            .err()
            .unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("/dev/video-roomcast-absent") && msg.contains("roomcast devices"),
            "{msg}"
        );
    }
}
