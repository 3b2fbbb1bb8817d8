//! A V4L2 buffer queue in either buffer API, as the camera (one CAPTURE queue) and the M2M
//! encoder (an OUTPUT and a CAPTURE queue) both drive it: which API a node speaks, buffer
//! descriptors with their plane arrays, formats, mmap and DMABUF export.
//!
//! The two APIs differ only in where a buffer's memory is described: the single-planar one in
//! `v4l2_buffer` itself, the multi-planar one in an array of `v4l2_plane` (one per memory
//! plane) that `v4l2_buffer.m.planes` points at. A multi-planar format may still keep all its
//! picture planes in one memory plane (NV12 through the MPLANE API, as most SoC capture paths
//! and vivid with `multiplanar=2` give it), or put each in a memory plane of its own (NV12M).
use super::sys;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// Memory planes a buffer may have here: three covers YUV420M, the most any format roomcast
/// takes spreads over. The kernel's own limit (VIDEO_MAX_PLANES) is eight.
pub const MAX_PLANES: usize = 3;
const VIDEO_MAX_PLANES: usize = 8;

/// Which V4L2 buffer API a queue speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    SinglePlanar,
    MultiPlanar,
}

impl Api {
    /// For an M2M node: multi-planar where offered (the API new codec drivers use;
    /// bcm2835-codec speaks only it, vicodec either by its `multiplanar` module parameter).
    pub fn for_m2m(caps: u32) -> Option<Self> {
        if caps & sys::CAP_VIDEO_M2M_MPLANE != 0
            || caps & sys::CAP_VIDEO_CAPTURE_MPLANE != 0 && caps & sys::CAP_VIDEO_OUTPUT_MPLANE != 0
        {
            Some(Self::MultiPlanar)
        } else if caps & sys::CAP_VIDEO_M2M != 0
            || caps & sys::CAP_VIDEO_CAPTURE != 0 && caps & sys::CAP_VIDEO_OUTPUT != 0
        {
            Some(Self::SinglePlanar)
        } else {
            None
        }
    }

    /// For a camera: single-planar where offered (what UVC cameras speak, and what a node that
    /// offers both was captured with before), else multi-planar (rkisp1, Rockchip's ISPs,
    /// unicam and most SoC capture paths offer only it).
    pub fn for_capture(caps: u32) -> Option<Self> {
        if caps & sys::CAP_VIDEO_CAPTURE != 0 {
            Some(Self::SinglePlanar)
        } else if caps & sys::CAP_VIDEO_CAPTURE_MPLANE != 0 {
            Some(Self::MultiPlanar)
        } else {
            None
        }
    }

    pub fn output_type(self) -> u32 {
        match self {
            Self::SinglePlanar => sys::BUF_TYPE_VIDEO_OUTPUT,
            Self::MultiPlanar => sys::BUF_TYPE_VIDEO_OUTPUT_MPLANE,
        }
    }

    pub fn capture_type(self) -> u32 {
        match self {
            Self::SinglePlanar => sys::BUF_TYPE_VIDEO_CAPTURE,
            Self::MultiPlanar => sys::BUF_TYPE_VIDEO_CAPTURE_MPLANE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SinglePlanar => "single-planar",
            Self::MultiPlanar => "multi-planar",
        }
    }
}

/// A buffer descriptor for either API: in the multi-planar one, `v4l2_buffer.m.planes` points
/// at `planes`, set just before each ioctl so the pointer is never stale.
pub struct Buf {
    pub buf: sys::v4l2_buffer,
    pub planes: [sys::v4l2_plane; MAX_PLANES],
    /// How many of `planes` the multi-planar API passes (the queue's memory planes: the kernel
    /// refuses fewer); 0 on the single-planar API.
    planes_in_use: u32,
}

impl Buf {
    /// An MMAP buffer with one memory plane.
    pub fn new(api: Api, ty: u32, index: u32) -> Self {
        Self::with_planes(api, ty, index, 1)
    }

    /// An MMAP buffer of a queue whose format has `memory_planes` memory planes (1 to
    /// [`MAX_PLANES`]; ignored on the single-planar API, which has one).
    pub fn with_planes(api: Api, ty: u32, index: u32, memory_planes: usize) -> Self {
        let mut buf: sys::v4l2_buffer = sys::zeroed();
        buf.type_ = ty;
        buf.index = index;
        buf.memory = sys::MEMORY_MMAP;
        let planes_in_use = match api {
            Api::SinglePlanar => 0,
            Api::MultiPlanar => memory_planes.clamp(1, MAX_PLANES) as u32,
        };
        buf.length = planes_in_use;
        Self {
            buf,
            planes: [sys::zeroed(); MAX_PLANES],
            planes_in_use,
        }
    }

    fn mplane(&self) -> bool {
        self.planes_in_use > 0
    }

    pub fn ioctl(&mut self, fd: &OwnedFd, request: u32) -> std::io::Result<()> {
        if self.mplane() {
            self.buf.m.planes = self.planes.as_mut_ptr().cast();
            self.buf.length = self.planes_in_use;
        }
        sys::ioctl(fd.as_fd(), request, &mut self.buf)
    }

    /// The payload bytes in memory plane `plane` (from [`Self::data_offset`] on).
    pub fn bytesused(&self, plane: usize) -> usize {
        if self.mplane() {
            let p = &self.planes[plane];
            p.bytesused.saturating_sub(p.data_offset) as usize
        } else {
            self.buf.bytesused as usize
        }
    }

    /// Where the payload of memory plane `plane` starts in its mapping (a driver may put a
    /// header first; vivid does for NV16M).
    pub fn data_offset(&self, plane: usize) -> usize {
        if self.mplane() {
            self.planes[plane].data_offset as usize
        } else {
            0
        }
    }

    /// The payload size of an OUTPUT buffer's (only) memory plane.
    pub fn set_bytesused(&mut self, n: u32) {
        if self.mplane() {
            self.planes[0].bytesused = n;
        } else {
            self.buf.bytesused = n;
        }
    }

    /// The size of memory plane `plane`, as QUERYBUF gives it.
    pub fn length(&self, plane: usize) -> usize {
        if self.mplane() {
            self.planes[plane].length as usize
        } else {
            self.buf.length as usize
        }
    }

    fn mmap_offset(&self, plane: usize) -> libc::off_t {
        // SAFETY: QUERYBUF on an MMAP buffer fills in the offset member of both unions.
        unsafe {
            if self.mplane() {
                self.planes[plane].m.mem_offset as libc::off_t
            } else {
                self.buf.m.offset as libc::off_t
            }
        }
    }
}

/// One mmap'ed memory plane of a buffer, unmapped when dropped.
pub struct Mapping {
    pub(super) ptr: *mut libc::c_void,
    pub(super) len: usize,
}

// SAFETY: a mapping is plain memory. A camera's is read only while its buffer is dequeued (by
// the owning thread, or through a lease that keeps the buffer dequeued); an encoder's is
// written only by the thread that owns the encoder, before the buffer is queued.
unsafe impl Send for Mapping {}
// SAFETY: as above: no two threads touch one mapping while the driver or another holds it.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Map memory plane `plane` of the buffer QUERYBUF just described into `buf`: read-only for a
/// camera's buffer, writable for an encoder's.
pub fn map(fd: &OwnedFd, buf: &Buf, plane: usize, writable: bool) -> std::io::Result<Mapping> {
    let len = buf.length(plane);
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: maps the buffer the driver just described, shared.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            buf.mmap_offset(plane),
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Mapping { ptr, len })
}

/// VIDIOC_EXPBUF: memory plane `plane` of buffer `index` as a DMABUF another device can import.
pub fn export(fd: &OwnedFd, ty: u32, index: u32, plane: u32) -> std::io::Result<OwnedFd> {
    let mut exp = sys::v4l2_exportbuffer {
        type_: ty,
        index,
        plane,
        flags: libc::O_CLOEXEC as u32,
        fd: -1,
        reserved: [0; 11],
    };
    sys::ioctl(fd.as_fd(), sys::VIDIOC_EXPBUF, &mut exp)?;
    // SAFETY: EXPBUF returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(exp.fd) })
}

/// Fill in the format to ask S_FMT for: `bytesperline` 0 lets the driver choose. On the
/// multi-planar API one memory plane is asked for; a driver whose format needs more (NV12M)
/// says so in its answer.
pub fn set_format(
    fmt: &mut sys::v4l2_format,
    api: Api,
    fourcc: u32,
    width: u32,
    height: u32,
    bytesperline: u32,
) {
    match api {
        Api::SinglePlanar => {
            fmt.fmt.pix = sys::v4l2_pix_format {
                width,
                height,
                pixelformat: fourcc,
                field: sys::FIELD_NONE,
                bytesperline,
                ..sys::zeroed()
            }
        }
        Api::MultiPlanar => {
            let mut pix_mp = sys::v4l2_pix_format_mplane {
                width,
                height,
                pixelformat: fourcc,
                field: sys::FIELD_NONE,
                num_planes: 1,
                ..sys::zeroed()
            };
            pix_mp.plane_fmt[0].bytesperline = bytesperline;
            fmt.fmt.pix_mp = pix_mp;
        }
    }
}

/// One memory plane's layout, as the driver set it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaneFormat {
    pub bytesperline: u32,
    pub sizeimage: u32,
}

/// What S_FMT (or G_FMT) answered, in either API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFormat {
    pub fourcc: u32,
    pub width: u32,
    pub height: u32,
    /// One per memory plane: always one on the single-planar API.
    pub planes: heapless::Vec<PlaneFormat, VIDEO_MAX_PLANES>,
}

impl QueueFormat {
    /// The first memory plane (zeros from a driver that gave none).
    pub fn first_plane(&self) -> PlaneFormat {
        self.planes.first().copied().unwrap_or_default()
    }
}

/// The format a driver answered with.
pub fn format_of(fmt: &sys::v4l2_format, api: Api) -> QueueFormat {
    match api {
        Api::SinglePlanar => {
            // SAFETY: S_FMT on a single-planar queue fills in `pix`.
            let p = unsafe { fmt.fmt.pix };
            QueueFormat {
                fourcc: p.pixelformat,
                width: p.width,
                height: p.height,
                planes: heapless::Vec::from_slice(&[PlaneFormat {
                    bytesperline: p.bytesperline,
                    sizeimage: p.sizeimage,
                }])
                .expect("one plane"),
            }
        }
        Api::MultiPlanar => {
            // SAFETY: S_FMT on a multi-planar queue fills in `pix_mp`.
            let p = unsafe { fmt.fmt.pix_mp };
            let count = usize::from(p.num_planes).min(VIDEO_MAX_PLANES);
            QueueFormat {
                fourcc: p.pixelformat,
                width: p.width,
                height: p.height,
                planes: p.plane_fmt[..count]
                    .iter()
                    .map(|f| PlaneFormat {
                        bytesperline: f.bytesperline,
                        sizeimage: f.sizeimage,
                    })
                    .collect(),
            }
        }
    }
}

/// VIDIOC_STREAMON or VIDIOC_STREAMOFF on the queue of type `ty`.
pub fn set_streaming(fd: &OwnedFd, ty: u32, on: bool) -> std::io::Result<()> {
    let mut ty = ty as i32;
    let request = if on {
        sys::VIDIOC_STREAMON
    } else {
        sys::VIDIOC_STREAMOFF
    };
    sys::ioctl(fd.as_fd(), request, &mut ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_follows_the_capabilities() {
        assert_eq!(
            Api::for_m2m(sys::CAP_VIDEO_M2M_MPLANE),
            Some(Api::MultiPlanar)
        );
        assert_eq!(Api::for_m2m(sys::CAP_VIDEO_M2M), Some(Api::SinglePlanar));
        assert_eq!(
            Api::for_m2m(sys::CAP_VIDEO_CAPTURE | sys::CAP_VIDEO_OUTPUT),
            Some(Api::SinglePlanar)
        );
        assert_eq!(Api::for_m2m(sys::CAP_VIDEO_CAPTURE), None);
        // A camera: single-planar where it has it, else multi-planar (rkisp1, unicam).
        assert_eq!(
            Api::for_capture(sys::CAP_VIDEO_CAPTURE),
            Some(Api::SinglePlanar)
        );
        assert_eq!(
            Api::for_capture(sys::CAP_VIDEO_CAPTURE | sys::CAP_VIDEO_CAPTURE_MPLANE),
            Some(Api::SinglePlanar)
        );
        assert_eq!(
            Api::for_capture(sys::CAP_VIDEO_CAPTURE_MPLANE),
            Some(Api::MultiPlanar)
        );
        assert_eq!(Api::for_capture(sys::CAP_VIDEO_OUTPUT), None);
        assert_eq!(
            Api::MultiPlanar.capture_type(),
            sys::BUF_TYPE_VIDEO_CAPTURE_MPLANE
        );
    }

    #[test]
    fn the_answer_of_either_api_reads_as_its_memory_planes() {
        // NV12M 640x480 with the luma rows padded to 704 bytes: two memory planes.
        let mut fmt: sys::v4l2_format = sys::zeroed();
        set_format(
            &mut fmt,
            Api::MultiPlanar,
            sys::fourcc(*b"NM12"),
            640,
            480,
            0,
        );
        // SAFETY: set_format filled in `pix_mp`; the driver's answer is written over it.
        unsafe {
            assert_eq!(fmt.fmt.pix_mp.num_planes, 1, "one memory plane asked for");
            fmt.fmt.pix_mp.num_planes = 2;
            fmt.fmt.pix_mp.plane_fmt[0] = sys::v4l2_plane_pix_format {
                sizeimage: 704 * 480,
                bytesperline: 704,
                reserved: [0; 6],
            };
            fmt.fmt.pix_mp.plane_fmt[1] = sys::v4l2_plane_pix_format {
                sizeimage: 704 * 240,
                bytesperline: 704,
                reserved: [0; 6],
            };
        }
        let got = format_of(&fmt, Api::MultiPlanar);
        assert_eq!(
            (got.fourcc, got.width, got.height),
            (sys::fourcc(*b"NM12"), 640, 480)
        );
        assert_eq!(
            got.planes.as_slice(),
            [
                PlaneFormat {
                    bytesperline: 704,
                    sizeimage: 704 * 480
                },
                PlaneFormat {
                    bytesperline: 704,
                    sizeimage: 704 * 240
                }
            ]
        );
        // The single-planar answer is one plane.
        let mut fmt: sys::v4l2_format = sys::zeroed();
        set_format(
            &mut fmt,
            Api::SinglePlanar,
            sys::fourcc(*b"YUYV"),
            640,
            480,
            1280,
        );
        let got = format_of(&fmt, Api::SinglePlanar);
        assert_eq!(got.planes.len(), 1);
        assert_eq!(got.first_plane().bytesperline, 1280);
    }

    #[test]
    fn a_multi_planar_buffer_passes_one_plane_entry_per_memory_plane() {
        let buf = Buf::with_planes(Api::MultiPlanar, sys::BUF_TYPE_VIDEO_CAPTURE_MPLANE, 2, 2);
        assert_eq!((buf.buf.length, buf.buf.index), (2, 2));
        let mut buf = Buf::new(Api::MultiPlanar, sys::BUF_TYPE_VIDEO_CAPTURE_MPLANE, 0);
        assert_eq!(buf.buf.length, 1);
        // bytesused counts the header at data_offset; the payload is what follows it.
        buf.planes[0].bytesused = 1128;
        buf.planes[0].data_offset = 128;
        assert_eq!((buf.bytesused(0), buf.data_offset(0)), (1000, 128));
        let mut single = Buf::new(Api::SinglePlanar, sys::BUF_TYPE_VIDEO_CAPTURE, 0);
        single.set_bytesused(77);
        assert_eq!((single.buf.length, single.bytesused(0)), (0, 77));
    }
}
