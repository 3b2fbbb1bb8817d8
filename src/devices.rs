//! `roomcast devices`: what this board has that roomcast can use. Cameras with their formats
//! and sizes, memory-to-memory encoders (and which of them do H.264), ALSA capture and playback
//! devices, and GPIO chips: a board owner's first command, and what the config's device names
//! are picked from.
use crate::media::v4l2::{self, DeviceInfo, SizeInfo};
use std::fmt::Write as _;
use std::path::Path;

/// One ALSA PCM from /proc/asound/pcm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlsaPcm {
    pub card: u32,
    pub device: u32,
    pub name: String,
    pub capture: bool,
    pub playback: bool,
}

/// Parse /proc/asound/pcm: `00-01: Loopback PCM : Loopback PCM : playback 8 : capture 8`.
pub fn parse_proc_pcm(text: &str) -> Vec<AlsaPcm> {
    text.lines()
        .filter_map(|line| {
            let (id, rest) = line.split_once(':')?;
            let (card, device) = id.trim().split_once('-')?;
            let fields: Vec<&str> = rest.split(" : ").map(str::trim).collect();
            Some(AlsaPcm {
                card: card.parse().ok()?,
                device: device.parse().ok()?,
                name: fields.first().copied().unwrap_or("").to_owned(),
                capture: fields.iter().any(|f| f.starts_with("capture")),
                playback: fields.iter().any(|f| f.starts_with("playback")),
            })
        })
        .collect()
}

/// Card index → short id (the `CARD=` name) from /proc/asound/cards:
/// ` 0 [Loopback       ]: Loopback - Loopback`.
pub fn parse_proc_cards(text: &str) -> Vec<(u32, String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let (index, rest) = line.split_once(' ')?;
            let index = index.parse().ok()?;
            let rest = rest.trim_start().strip_prefix('[')?;
            let (id, rest) = rest.split_once(']')?;
            let long = rest.split_once(" - ").map_or("", |x| x.1).trim();
            Some((index, id.trim().to_owned(), long.to_owned()))
        })
        .collect()
}

fn sizes_text(sizes: &[SizeInfo]) -> String {
    let parts: Vec<String> = sizes
        .iter()
        .map(|s| match s {
            SizeInfo::Discrete { width, height, fps } => {
                let rates: Vec<String> = fps.iter().map(|f| format!("{f:.0}")).collect();
                if rates.is_empty() {
                    format!("{width}x{height}")
                } else {
                    format!("{width}x{height}@{}", rates.join("/"))
                }
            }
            SizeInfo::Range { min, max, step } => format!(
                "{}x{} to {}x{} (step {}x{})",
                min.0, min.1, max.0, max.1, step.0, step.1
            ),
        })
        .collect();
    if parts.is_empty() {
        "sizes not listed".into()
    } else {
        parts.join(", ")
    }
}

fn formats_text(list: &[v4l2::FormatInfo]) -> String {
    list.iter()
        .map(|f| v4l2::sys::fourcc_text(f.fourcc))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `[video] encoder = "auto"` picks for this camera (its preferred capture format) among
/// the M2M devices present: the same decision `roomcast run` makes.
fn auto_choice(camera: &DeviceInfo, infos: &[DeviceInfo]) -> String {
    let offered: Vec<u32> = camera.capture_formats.iter().map(|f| f.fourcc).collect();
    let pixel = match v4l2::choose_format(&offered, None) {
        Ok(pixel) => pixel,
        Err(why) => return format!("nothing: {why}"),
    };
    let h264 = v4l2::sys::fourcc(*b"H264");
    let candidates: Vec<_> = infos
        .iter()
        .filter(|i| i.is_m2m())
        .map(|i| (i.path.clone(), v4l2::m2m::negotiate(i, pixel, h264)))
        .collect();
    match crate::media::choose_encoder(
        crate::media::EncoderChoice::Auto,
        pixel,
        &candidates,
        cfg!(feature = "software-h264"),
    ) {
        Ok(decision) => format!("{decision}"),
        Err(why) => format!("nothing: {why}"),
    }
}

fn cameras_and_encoders(out: &mut String) {
    let infos: Vec<DeviceInfo> = v4l2::video_nodes()
        .iter()
        .filter_map(|p| match v4l2::query(p) {
            Ok(info) => Some(info),
            Err(e) => {
                let _ = writeln!(out, "  ({}: {e})", p.display());
                None
            }
        })
        .collect();
    let _ = writeln!(out, "Cameras ([video] device):");
    let cameras: Vec<&DeviceInfo> = infos.iter().filter(|i| i.is_capture()).collect();
    if cameras.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for cam in cameras {
        let _ = writeln!(
            out,
            "  {}  \"{}\"  driver {}  bus {}  {} API  (or device = \"name:{}\" / \"bus:{}\")",
            cam.path.display(),
            cam.card,
            cam.driver,
            cam.bus,
            v4l2::queue::Api::for_capture(cam.caps).map_or("no capture", |api| api.as_str()),
            cam.card,
            cam.bus
        );
        let mut others = Vec::new();
        for f in &cam.capture_formats {
            let usable = match v4l2::pixel_of(f.fourcc) {
                Some(crate::media::PixelFormat::H264) => "passed through",
                Some(crate::media::PixelFormat::Mjpeg) => {
                    "decoded in software, then the H.264 encoder: CPU on every frame"
                }
                Some(_) => "to the H.264 encoder",
                None => {
                    others.push(v4l2::sys::fourcc_text(f.fourcc));
                    continue;
                }
            };
            let _ = writeln!(
                out,
                "    {} ({}; {usable}): {}",
                v4l2::sys::fourcc_text(f.fourcc),
                f.description,
                sizes_text(&f.sizes)
            );
        }
        if !others.is_empty() {
            let _ = writeln!(out, "    also offers (not used): {}", others.join(" "));
        }
        let _ = writeln!(
            out,
            "    encoder = \"auto\" uses: {}",
            auto_choice(cam, &infos)
        );
    }
    let _ = writeln!(out, "Encoders (memory-to-memory, [video] encoder_device):");
    let m2m: Vec<&DeviceInfo> = infos.iter().filter(|i| i.is_m2m()).collect();
    if m2m.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for dev in m2m {
        let kind = if dev.is_h264_encoder() {
            "H.264 encoder"
        } else if dev.is_encoder() {
            "encoder, not H.264"
        } else {
            "not an encoder"
        };
        let _ = writeln!(
            out,
            "  {}  \"{}\"  driver {}: {kind}; takes {} gives {}",
            dev.path.display(),
            dev.card,
            dev.driver,
            formats_text(&dev.output_formats),
            formats_text(&dev.capture_formats)
        );
    }
}

fn alsa(out: &mut String) {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cards = parse_proc_cards(&read("/proc/asound/cards"));
    let pcms = parse_proc_pcm(&read("/proc/asound/pcm"));
    for (title, want_capture) in [
        ("Microphones (ALSA capture, [audio] device):", true),
        ("Speakers (ALSA playback):", false),
    ] {
        let _ = writeln!(out, "{title}");
        let list: Vec<&AlsaPcm> = pcms
            .iter()
            .filter(|p| if want_capture { p.capture } else { p.playback })
            .collect();
        if list.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for p in list {
            let (id, long) = cards
                .iter()
                .find(|c| c.0 == p.card)
                .map(|c| (c.1.as_str(), c.2.as_str()))
                .unwrap_or(("?", ""));
            let _ = writeln!(
                out,
                "  hw:{},{}  (plughw:CARD={id},DEV={})  \"{}\"  card \"{long}\"",
                p.card, p.device, p.device, p.name
            );
        }
    }
}

fn gpio(out: &mut String) {
    let _ = writeln!(out, "GPIO chips ([leds]):");
    let chips = gpiocdev::chip::chips().unwrap_or_default();
    if chips.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for path in chips {
        match gpiocdev::Chip::from_path(&path).and_then(|c| c.info()) {
            Ok(info) => {
                let _ = writeln!(
                    out,
                    "  {}  label \"{}\"  {} lines",
                    path.display(),
                    info.label,
                    info.num_lines
                );
            }
            Err(e) => {
                let _ = writeln!(out, "  {}: {e}", path.display());
            }
        }
    }
}

/// Everything, as the text `roomcast devices` prints.
pub fn report() -> String {
    let mut out = String::new();
    cameras_and_encoders(&mut out);
    alsa(&mut out);
    gpio(&mut out);
    if !Path::new("/proc/asound").exists() {
        out.push_str("(no /proc/asound: this kernel has no sound support)\n");
    }
    out
}

pub fn run() -> anyhow::Result<std::process::ExitCode> {
    print!("{}", report());
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_asound() {
        let pcm = "00-00: Loopback PCM : Loopback PCM : playback 2 : capture 2\n\
                   01-00: USB Audio : USB Audio : capture 1\n";
        let list = parse_proc_pcm(pcm);
        assert_eq!(list.len(), 2);
        assert!(list[0].capture && list[0].playback);
        assert_eq!(list[1].card, 1);
        assert!(list[1].capture && !list[1].playback);
        assert_eq!(list[1].name, "USB Audio");
        let cards = " 0 [Loopback       ]: Loopback - Loopback\n                      Loopback 1\n 1 [Device         ]: USB-Audio - USB PnP Sound Device\n";
        assert_eq!(
            parse_proc_cards(cards),
            [
                (0, "Loopback".into(), "Loopback".into()),
                (1, "Device".into(), "USB PnP Sound Device".into())
            ]
        );
    }

    #[test]
    fn report_runs_without_devices() {
        let text = report();
        assert!(
            text.contains("Cameras") && text.contains("GPIO chips"),
            "{text}"
        );
    }
}
