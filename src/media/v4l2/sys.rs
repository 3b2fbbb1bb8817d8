//! The few V4L2 uAPI structures and ioctls roomcast uses (linux/videodev2.h), declared by hand.
//!
//! Why not the `v4l` or `v4l2r` crate: both generate these bindings with bindgen at build time,
//! which needs libclang on the build host and the target's kernel headers for every cross
//! target, and the static board build (cargo-zigbuild, aarch64/armv7 musl) has neither. The
//! subset here is small and its layout is pinned by the size checks below, which fail the build
//! on a target where a structure would not match the kernel's.
#![allow(non_camel_case_types, dead_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

pub const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
pub const BUF_TYPE_VIDEO_OUTPUT: u32 = 2;
pub const BUF_TYPE_VIDEO_CAPTURE_MPLANE: u32 = 9;
pub const BUF_TYPE_VIDEO_OUTPUT_MPLANE: u32 = 10;
pub const MEMORY_MMAP: u32 = 1;
pub const MEMORY_DMABUF: u32 = 4;
pub const FIELD_ANY: u32 = 0;
pub const FIELD_NONE: u32 = 1;

pub const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
pub const CAP_VIDEO_OUTPUT: u32 = 0x0000_0002;
pub const CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
pub const CAP_VIDEO_OUTPUT_MPLANE: u32 = 0x0000_2000;
pub const CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
pub const CAP_VIDEO_M2M: u32 = 0x0000_8000;
pub const CAP_STREAMING: u32 = 0x0400_0000;
pub const CAP_DEVICE_CAPS: u32 = 0x8000_0000;

pub const FMT_FLAG_COMPRESSED: u32 = 0x0001;
pub const FRMSIZE_TYPE_DISCRETE: u32 = 1;
pub const FRMIVAL_TYPE_DISCRETE: u32 = 1;
pub const CAP_TIMEPERFRAME: u32 = 0x1000;

pub const BUF_FLAG_KEYFRAME: u32 = 0x0008;
pub const BUF_FLAG_ERROR: u32 = 0x0040;
pub const BUF_FLAG_TIMESTAMP_MASK: u32 = 0xe000;
pub const BUF_FLAG_TIMESTAMP_MONOTONIC: u32 = 0x2000;
/// The last buffer of a drain (after V4L2_ENC_CMD_STOP); it may be empty.
pub const BUF_FLAG_LAST: u32 = 0x0010_0000;

pub const ENC_CMD_START: u32 = 0;
pub const ENC_CMD_STOP: u32 = 1;

/// Stateful codec controls (linux/v4l2-controls.h), all in the codec class.
pub const CTRL_CLASS_CODEC: u32 = 0x0099_0000;
const CID_CODEC_BASE: u32 = CTRL_CLASS_CODEC | 0x900;
pub const CID_MPEG_VIDEO_GOP_SIZE: u32 = CID_CODEC_BASE + 203;
pub const CID_MPEG_VIDEO_BITRATE_MODE: u32 = CID_CODEC_BASE + 206;
pub const CID_MPEG_VIDEO_BITRATE: u32 = CID_CODEC_BASE + 207;
pub const CID_MPEG_VIDEO_REPEAT_SEQ_HEADER: u32 = CID_CODEC_BASE + 226;
pub const CID_MPEG_VIDEO_FORCE_KEY_FRAME: u32 = CID_CODEC_BASE + 229;
pub const CID_MPEG_VIDEO_H264_I_PERIOD: u32 = CID_CODEC_BASE + 358;
pub const CID_MPEG_VIDEO_H264_LEVEL: u32 = CID_CODEC_BASE + 359;
pub const CID_MPEG_VIDEO_H264_PROFILE: u32 = CID_CODEC_BASE + 363;
pub const MPEG_VIDEO_BITRATE_MODE_CBR: i64 = 1;
pub const MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE: i64 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_capability {
    pub driver: [u8; 16],
    pub card: [u8; 32],
    pub bus_info: [u8; 32],
    pub version: u32,
    pub capabilities: u32,
    pub device_caps: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_fmtdesc {
    pub index: u32,
    pub type_: u32,
    pub flags: u32,
    pub description: [u8; 32],
    pub pixelformat: u32,
    pub mbus_code: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_pix_format {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub bytesperline: u32,
    pub sizeimage: u32,
    pub colorspace: u32,
    pub priv_: u32,
    pub flags: u32,
    pub ycbcr_enc: u32,
    pub quantization: u32,
    pub xfer_func: u32,
}

/// `fmt` is a union in the kernel whose largest member is 200 bytes and which holds pointers
/// (`v4l2_window`), hence the pointer-sized alignment.
#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_format_union {
    pub pix: v4l2_pix_format,
    pub pix_mp: v4l2_pix_format_mplane,
    pub raw_data: [u8; 200],
    _align: [usize; 0],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_format {
    pub type_: u32,
    pub fmt: v4l2_format_union,
}

/// One plane's layout in a multi-planar format.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_plane_pix_format {
    pub sizeimage: u32,
    pub bytesperline: u32,
    pub reserved: [u16; 6],
}

/// The kernel declares it packed; every field is naturally aligned at its offset, so repr(C)
/// gives the same layout (pinned by the size check below).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_pix_format_mplane {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub colorspace: u32,
    pub plane_fmt: [v4l2_plane_pix_format; 8],
    pub num_planes: u8,
    pub flags: u8,
    pub ycbcr_enc: u8,
    pub quantization: u8,
    pub xfer_func: u8,
    pub reserved: [u8; 7],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_requestbuffers {
    pub count: u32,
    pub type_: u32,
    pub memory: u32,
    pub capabilities: u32,
    pub flags: u8,
    pub reserved: [u8; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_timecode {
    pub type_: u32,
    pub flags: u32,
    pub frames: u8,
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub userbits: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_buffer_m {
    pub offset: u32,
    pub userptr: libc::c_ulong,
    pub planes: *mut libc::c_void,
    pub fd: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_buffer {
    pub index: u32,
    pub type_: u32,
    pub bytesused: u32,
    pub flags: u32,
    pub field: u32,
    pub timestamp: libc::timeval,
    pub timecode: v4l2_timecode,
    pub sequence: u32,
    pub memory: u32,
    pub m: v4l2_buffer_m,
    pub length: u32,
    pub reserved2: u32,
    pub request_fd: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_plane_m {
    pub mem_offset: u32,
    pub userptr: libc::c_ulong,
    pub fd: i32,
}

/// One plane of a multi-planar buffer; `v4l2_buffer.m.planes` points at an array of these and
/// `length` says how many.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_plane {
    pub bytesused: u32,
    pub length: u32,
    pub m: v4l2_plane_m,
    pub data_offset: u32,
    pub reserved: [u32; 11],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_rect {
    pub left: i32,
    pub top: i32,
    pub width: u32,
    pub height: u32,
}

/// VIDIOC_S_SELECTION: on an encoder's OUTPUT queue, target CROP is the part of the (aligned)
/// buffer that holds the picture.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_selection {
    pub type_: u32,
    pub target: u32,
    pub flags: u32,
    pub r: v4l2_rect,
    pub reserved: [u32; 9],
}

pub const SEL_TGT_CROP: u32 = 0;

/// VIDIOC_EXPBUF: a buffer of an MMAP queue as a DMABUF fd, for another device to import.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_exportbuffer {
    pub type_: u32,
    pub index: u32,
    pub plane: u32,
    pub flags: u32,
    pub fd: i32,
    pub reserved: [u32; 11],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_encoder_cmd {
    pub cmd: u32,
    pub flags: u32,
    pub raw: [u32; 8],
}

/// Packed in the kernel: the value union sits at offset 12 on every target. Only integer
/// controls are set here, so the union is its 64-bit member (`value` is its low half on
/// little-endian targets, which every board here is).
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct v4l2_ext_control {
    pub id: u32,
    pub size: u32,
    pub reserved2: u32,
    pub value64: i64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_ext_controls {
    /// `ctrl_class` or `which`.
    pub which: u32,
    pub count: u32,
    pub error_idx: u32,
    pub request_fd: i32,
    pub reserved: u32,
    pub controls: *mut v4l2_ext_control,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_fract {
    pub numerator: u32,
    pub denominator: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_captureparm {
    pub capability: u32,
    pub capturemode: u32,
    pub timeperframe: v4l2_fract,
    pub extendedmode: u32,
    pub readbuffers: u32,
    pub reserved: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_streamparm_union {
    pub capture: v4l2_captureparm,
    pub raw_data: [u8; 200],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_streamparm {
    pub type_: u32,
    pub parm: v4l2_streamparm_union,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_frmsizeenum {
    pub index: u32,
    pub pixel_format: u32,
    pub type_: u32,
    /// discrete: width, height; stepwise: min_width, max_width, step_width, min_height,
    /// max_height, step_height.
    pub size: [u32; 6],
    pub reserved: [u32; 2],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_frmivalenum {
    pub index: u32,
    pub pixel_format: u32,
    pub width: u32,
    pub height: u32,
    pub type_: u32,
    /// discrete: numerator, denominator; stepwise: min, max, step fractions.
    pub interval: [u32; 6],
    pub reserved: [u32; 2],
}

// The kernel's sizes, which the ioctl numbers encode: a mismatch here would make every call
// fail with ENOTTY, so catch it at build time.
const _: () = assert!(std::mem::size_of::<v4l2_capability>() == 104);
const _: () = assert!(std::mem::size_of::<v4l2_fmtdesc>() == 64);
const _: () = assert!(std::mem::size_of::<v4l2_pix_format>() == 48);
const _: () = assert!(std::mem::size_of::<v4l2_requestbuffers>() == 20);
const _: () = assert!(std::mem::size_of::<v4l2_streamparm>() == 204);
const _: () = assert!(std::mem::size_of::<v4l2_frmsizeenum>() == 44);
const _: () = assert!(std::mem::size_of::<v4l2_frmivalenum>() == 52);
const _: () = assert!(std::mem::size_of::<v4l2_pix_format_mplane>() == 192);
const _: () = assert!(std::mem::size_of::<v4l2_encoder_cmd>() == 40);
const _: () = assert!(std::mem::size_of::<v4l2_selection>() == 64);
const _: () = assert!(std::mem::size_of::<v4l2_exportbuffer>() == 64);
const _: () = assert!(std::mem::size_of::<v4l2_ext_control>() == 20);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<v4l2_plane>() == 64);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<v4l2_ext_controls>() == 32);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<v4l2_format>() == 208);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<v4l2_buffer>() == 88);

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((b'V' as u32) << 8) | nr
}
const W: u32 = 1;
const R: u32 = 2;
const RW: u32 = 3;

pub const VIDIOC_QUERYCAP: u32 = ioc(R, 0, std::mem::size_of::<v4l2_capability>());
pub const VIDIOC_ENUM_FMT: u32 = ioc(RW, 2, std::mem::size_of::<v4l2_fmtdesc>());
pub const VIDIOC_G_FMT: u32 = ioc(RW, 4, std::mem::size_of::<v4l2_format>());
pub const VIDIOC_S_FMT: u32 = ioc(RW, 5, std::mem::size_of::<v4l2_format>());
pub const VIDIOC_REQBUFS: u32 = ioc(RW, 8, std::mem::size_of::<v4l2_requestbuffers>());
pub const VIDIOC_QUERYBUF: u32 = ioc(RW, 9, std::mem::size_of::<v4l2_buffer>());
pub const VIDIOC_QBUF: u32 = ioc(RW, 15, std::mem::size_of::<v4l2_buffer>());
pub const VIDIOC_DQBUF: u32 = ioc(RW, 17, std::mem::size_of::<v4l2_buffer>());
pub const VIDIOC_EXPBUF: u32 = ioc(RW, 16, std::mem::size_of::<v4l2_exportbuffer>());
pub const VIDIOC_STREAMON: u32 = ioc(W, 18, std::mem::size_of::<i32>());
pub const VIDIOC_STREAMOFF: u32 = ioc(W, 19, std::mem::size_of::<i32>());
pub const VIDIOC_G_PARM: u32 = ioc(RW, 21, std::mem::size_of::<v4l2_streamparm>());
pub const VIDIOC_S_PARM: u32 = ioc(RW, 22, std::mem::size_of::<v4l2_streamparm>());
pub const VIDIOC_S_EXT_CTRLS: u32 = ioc(RW, 72, std::mem::size_of::<v4l2_ext_controls>());
pub const VIDIOC_S_SELECTION: u32 = ioc(RW, 95, std::mem::size_of::<v4l2_selection>());
pub const VIDIOC_ENCODER_CMD: u32 = ioc(RW, 77, std::mem::size_of::<v4l2_encoder_cmd>());
pub const VIDIOC_ENUM_FRAMESIZES: u32 = ioc(RW, 74, std::mem::size_of::<v4l2_frmsizeenum>());
pub const VIDIOC_ENUM_FRAMEINTERVALS: u32 = ioc(RW, 75, std::mem::size_of::<v4l2_frmivalenum>());

/// All-zero: every structure here is plain data for which zero is a valid value.
pub fn zeroed<T: Copy>() -> T {
    // SAFETY: only used with the repr(C) plain-data structures above (integers, arrays, unions
    // of those, a nullable pointer), for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// One ioctl, retried on EINTR.
pub fn ioctl<T>(fd: BorrowedFd<'_>, request: u32, arg: &mut T) -> std::io::Result<()> {
    loop {
        // SAFETY: `arg` is a live, exclusively borrowed structure of the size `request` encodes.
        let rc = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                request as _,
                arg as *mut T as *mut libc::c_void,
            )
        };
        if rc >= 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// A NUL-padded C string field as text.
pub fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_owned()
}

pub const fn fourcc(code: [u8; 4]) -> u32 {
    u32::from_le_bytes(code)
}

pub fn fourcc_text(code: u32) -> String {
    let text: String = code
        .to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    text.trim_end().to_owned()
}

/// One control's description (VIDIOC_QUERYCTRL): whether a device has it, and its range.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_queryctrl {
    pub id: u32,
    pub type_: u32,
    pub name: [u8; 32],
    pub minimum: i32,
    pub maximum: i32,
    pub step: i32,
    pub default_value: i32,
    pub flags: u32,
    pub reserved: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<v4l2_queryctrl>() == 68);
pub const VIDIOC_QUERYCTRL: u32 = ioc(RW, 36, std::mem::size_of::<v4l2_queryctrl>());
/// The control is there but not usable (it stands for one the driver does not implement).
pub const CTRL_FLAG_DISABLED: u32 = 0x0001;
pub const CTRL_FLAG_READ_ONLY: u32 = 0x0004;
