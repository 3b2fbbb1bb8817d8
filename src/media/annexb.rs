//! H.264 Annex-B byte streams: start codes, NAL unit types, and SPS/PPS before every IDR.
//!
//! A UVC camera's H.264 (and some M2M encoders without REPEAT_SEQ_HEADER) send SPS and PPS once,
//! at stream start. A subscriber that joins later, or a decoder that lost packets, can only
//! start at an IDR that carries them, so the passthrough path remembers the latest SPS/PPS and
//! puts them in front of every IDR that comes without.
//!
//! The split into NAL units runs once per frame on the hot path, so the offsets live in a
//! fixed-capacity `heapless::Vec` (no allocation per frame).
use bytes::{BufMut, Bytes, BytesMut};

/// More NAL units than any sane access unit holds (a slice per macroblock row of 1080p is 68,
/// but cameras and encoders here use one to a few slices).
pub const MAX_NALS: usize = 64;

/// One NAL unit inside a buffer: `start..end` is the unit itself (header byte first), without
/// its start code or trailing zero bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NalUnit {
    /// Offset of the start code (3 or 4 bytes) in front of the unit.
    pub start_code_at: usize,
    pub start: usize,
    pub end: usize,
}

impl NalUnit {
    pub fn bytes<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        &data[self.start..self.end]
    }

    pub fn kind(&self, data: &[u8]) -> NalType {
        NalType::from_header(data[self.start])
    }
}

/// The NAL unit types the device cares about (H.264 Table 7-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalType {
    /// Non-IDR coded slice (1), or data partition A–C (2–4).
    Slice,
    /// Coded slice of an IDR picture (5).
    Idr,
    Sei,
    Sps,
    Pps,
    /// Access unit delimiter (9).
    Aud,
    Other(u8),
}

impl NalType {
    pub fn from_header(header: u8) -> Self {
        match header & 0x1f {
            1..=4 => Self::Slice,
            5 => Self::Idr,
            6 => Self::Sei,
            7 => Self::Sps,
            8 => Self::Pps,
            9 => Self::Aud,
            other => Self::Other(other),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnexBError {
    #[error("no Annex-B start code in {0} bytes: not an H.264 byte stream")]
    NoStartCode(usize),
    #[error("more than {MAX_NALS} NAL units in one access unit")]
    TooManyNals,
    #[error("an IDR arrived before any SPS/PPS: a decoder cannot start from it")]
    NoParameterSets,
}

/// Where the next start code (`00 00 01`) begins at or after `from`.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 3 <= data.len() {
        // Skip fast: the third byte decides most positions.
        match data[i + 2] {
            1 if data[i] == 0 && data[i + 1] == 0 => return Some(i),
            0 => i += 1,
            _ => i += 3,
        }
    }
    None
}

/// Split an Annex-B buffer into NAL units. Accepts 3- and 4-byte start codes (a 4-byte code is
/// a zero byte before a 3-byte one), ignores bytes before the first start code, trailing zero
/// bytes (`trailing_zero_8bits`) and empty units between back-to-back start codes.
pub fn split(data: &[u8]) -> Result<heapless::Vec<NalUnit, MAX_NALS>, AnnexBError> {
    let mut units = heapless::Vec::new();
    let Some(mut code) = find_start_code(data, 0) else {
        return Err(AnnexBError::NoStartCode(data.len()));
    };
    loop {
        let start = code + 3;
        let next = find_start_code(data, start);
        let mut end = next.unwrap_or(data.len());
        // Zeros before the next start code belong to it (4-byte code) or are padding.
        while end > start && data[end - 1] == 0 {
            end -= 1;
        }
        if end > start {
            // A zero before the 3-byte code makes it a 4-byte one.
            let start_code_at = if code > 0 && data[code - 1] == 0 {
                code - 1
            } else {
                code
            };
            units
                .push(NalUnit {
                    start_code_at,
                    start,
                    end,
                })
                .map_err(|_| AnnexBError::TooManyNals)?;
        }
        match next {
            Some(n) => code = n,
            None => return Ok(units),
        }
    }
}

/// Whether `data` holds a coded picture (a slice), not only parameter sets, SEI or delimiters.
/// An encoder in "separate header" mode hands its SPS/PPS over in a buffer of their own, which
/// is no frame to send.
pub fn has_slice(data: &[u8]) -> bool {
    split(data).is_ok_and(|units| {
        units
            .iter()
            .any(|u| matches!(u.kind(data), NalType::Slice | NalType::Idr))
    })
}

/// One access unit, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    pub data: Bytes,
    /// It holds an IDR slice (a decoder can start here, with the SPS/PPS in front).
    pub keyframe: bool,
    /// SPS/PPS were missing in front of the IDR and were put there.
    pub inserted_parameter_sets: bool,
}

/// Remembers the latest SPS and PPS of a stream and puts them in front of every IDR that lacks
/// them.
#[derive(Debug, Default, Clone)]
pub struct ParameterSets {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// IDRs that went out with SPS/PPS this code put in.
    pub inserted: u64,
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

impl ParameterSets {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn sps(&self) -> Option<&[u8]> {
        self.sps.as_deref()
    }

    pub fn pps(&self) -> Option<&[u8]> {
        self.pps.as_deref()
    }

    /// Take one access unit (one encoded picture, possibly with AUD, SEI, SPS, PPS); remember any
    /// SPS/PPS in it, and if it holds an IDR without both in front, return it with the latest
    /// ones inserted after a leading AUD (the order H.264 7.4.1.2.3 requires). An IDR before any
    /// SPS/PPS was ever seen is an error: no decoder could start from it.
    pub fn process(&mut self, data: Bytes) -> Result<AccessUnit, AnnexBError> {
        let units = split(&data)?;
        let mut seen_sps = false;
        let mut seen_pps = false;
        let mut first_idr = None;
        for (i, unit) in units.iter().enumerate() {
            match unit.kind(&data) {
                NalType::Sps => {
                    seen_sps = true;
                    // Allocates only when the camera changes its parameters.
                    if self.sps.as_deref() != Some(unit.bytes(&data)) {
                        self.sps = Some(data.slice(unit.start..unit.end));
                    }
                }
                NalType::Pps => {
                    seen_pps = true;
                    if self.pps.as_deref() != Some(unit.bytes(&data)) {
                        self.pps = Some(data.slice(unit.start..unit.end));
                    }
                }
                NalType::Idr if first_idr.is_none() => first_idr = Some(i),
                _ => {}
            }
        }
        let Some(idr) = first_idr else {
            return Ok(AccessUnit {
                data,
                keyframe: false,
                inserted_parameter_sets: false,
            });
        };
        if seen_sps && seen_pps {
            return Ok(AccessUnit {
                data,
                keyframe: true,
                inserted_parameter_sets: false,
            });
        }
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
            return Err(AnnexBError::NoParameterSets);
        };
        // Insert after a leading AUD, else before the first unit; never after the IDR slice.
        let at_unit = usize::from(units[0].kind(&data) == NalType::Aud).min(idr);
        let at = units[at_unit].start_code_at;
        let mut out = BytesMut::with_capacity(data.len() + sps.len() + pps.len() + 8);
        out.put_slice(&data[..at]);
        if !seen_sps {
            out.put_slice(&START_CODE);
            out.put_slice(sps);
        }
        if !seen_pps {
            out.put_slice(&START_CODE);
            out.put_slice(pps);
        }
        out.put_slice(&data[at..]);
        self.inserted += 1;
        Ok(AccessUnit {
            data: out.freeze(),
            keyframe: true,
            inserted_parameter_sets: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x21];
    const P: &[u8] = &[0x41, 0x9a, 0x02];
    const AUD: &[u8] = &[0x09, 0xf0];

    #[test]
    fn a_buffer_of_parameter_sets_alone_holds_no_picture() {
        assert!(!has_slice(&stream(&[
            (AUD, true),
            (SPS, true),
            (PPS, false)
        ])));
        assert!(has_slice(&stream(&[
            (SPS, true),
            (PPS, false),
            (IDR, false)
        ])));
        assert!(has_slice(&stream(&[(P, true)])));
        assert!(!has_slice(b"no start code"));
    }

    fn stream(units: &[(&[u8], bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (unit, long) in units {
            if *long {
                out.push(0);
            }
            out.extend_from_slice(&[0, 0, 1]);
            out.extend_from_slice(unit);
        }
        out
    }

    fn kinds(data: &[u8]) -> Vec<NalType> {
        split(data).unwrap().iter().map(|u| u.kind(data)).collect()
    }

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let data = stream(&[(SPS, true), (PPS, false), (IDR, true)]);
        let units = split(&data).unwrap();
        assert_eq!(units.len(), 3);
        assert_eq!(units[0].bytes(&data), SPS);
        assert_eq!(units[0].start_code_at, 0);
        assert_eq!(units[1].bytes(&data), PPS);
        assert_eq!(units[1].start_code_at, 4 + SPS.len());
        // The zero of the 4-byte code is not part of the PPS before it.
        assert_eq!(units[2].bytes(&data), IDR);
        assert_eq!(units[2].start_code_at, 4 + SPS.len() + 3 + PPS.len());
        assert_eq!(kinds(&data), [NalType::Sps, NalType::Pps, NalType::Idr]);
    }

    #[test]
    fn ignores_leading_garbage_trailing_zeros_and_empty_units() {
        let mut data = vec![0xff, 0x12];
        data.extend(stream(&[(SPS, true)]));
        data.extend_from_slice(&[0, 0, 1, 0, 0, 0, 1]); // an empty unit, then a 4-byte code
        data.extend_from_slice(P);
        data.extend_from_slice(&[0, 0, 0, 0]); // trailing_zero_8bits
        let units = split(&data).unwrap();
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].bytes(&data), SPS);
        assert_eq!(units[1].bytes(&data), P);
        assert_eq!(units[1].kind(&data), NalType::Slice);
    }

    #[test]
    fn a_unit_may_end_in_a_nonzero_byte_that_looks_like_a_code_prefix() {
        // 00 00 02 and 00 00 03 are not start codes (03 is emulation prevention).
        let unit: &[u8] = &[0x41, 0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x02];
        let data = stream(&[(unit, true), (P, false)]);
        let units = split(&data).unwrap();
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].bytes(&data), unit);
    }

    #[test]
    fn rejects_data_without_a_start_code() {
        assert_eq!(split(&[]).unwrap_err(), AnnexBError::NoStartCode(0));
        assert_eq!(split(&[0, 0]).unwrap_err(), AnnexBError::NoStartCode(2));
        assert_eq!(
            split(&[0x65, 1, 2, 3, 0, 0]).unwrap_err(),
            AnnexBError::NoStartCode(6)
        );
    }

    #[test]
    fn a_start_code_at_the_very_end_gives_no_unit() {
        let mut data = stream(&[(P, true)]);
        data.extend_from_slice(&[0, 0, 0, 1]);
        assert_eq!(split(&data).unwrap().len(), 1);
    }

    #[test]
    fn too_many_units_is_an_error_not_a_panic() {
        let many: Vec<(&[u8], bool)> = (0..=MAX_NALS).map(|_| (P, false)).collect();
        assert_eq!(split(&stream(&many)).unwrap_err(), AnnexBError::TooManyNals);
        let just: Vec<(&[u8], bool)> = (0..MAX_NALS).map(|_| (P, false)).collect();
        assert_eq!(split(&stream(&just)).unwrap().len(), MAX_NALS);
    }

    #[test]
    fn nal_types_from_headers() {
        assert_eq!(NalType::from_header(0x67), NalType::Sps);
        assert_eq!(NalType::from_header(0x68), NalType::Pps);
        assert_eq!(NalType::from_header(0x65), NalType::Idr);
        assert_eq!(NalType::from_header(0x25), NalType::Idr); // nal_ref_idc 1
        assert_eq!(NalType::from_header(0x41), NalType::Slice);
        assert_eq!(NalType::from_header(0x06), NalType::Sei);
        assert_eq!(NalType::from_header(0x09), NalType::Aud);
        assert_eq!(NalType::from_header(0x7c), NalType::Other(28)); // FU-A is RTP-only
    }

    #[test]
    fn inserts_sps_pps_before_an_idr_that_lacks_them() {
        let mut sets = ParameterSets::new();
        let first = sets
            .process(Bytes::from(stream(&[
                (SPS, true),
                (PPS, true),
                (IDR, true),
            ])))
            .unwrap();
        assert!(first.keyframe && !first.inserted_parameter_sets);
        assert_eq!(sets.sps(), Some(SPS));
        assert_eq!(sets.pps(), Some(PPS));

        let delta = Bytes::from(stream(&[(P, true)]));
        let out = sets.process(delta.clone()).unwrap();
        assert_eq!(out.data, delta, "deltas pass through untouched");
        assert!(!out.keyframe);

        let bare = sets.process(Bytes::from(stream(&[(IDR, true)]))).unwrap();
        assert!(bare.keyframe && bare.inserted_parameter_sets);
        assert_eq!(
            bare.data,
            stream(&[(SPS, true), (PPS, true), (IDR, true)]).as_slice()
        );
        assert_eq!(sets.inserted, 1);
    }

    #[test]
    fn inserts_after_a_leading_aud_and_only_what_is_missing() {
        let mut sets = ParameterSets::new();
        sets.process(Bytes::from(stream(&[
            (SPS, true),
            (PPS, true),
            (IDR, true),
        ])))
        .unwrap();
        // The camera repeats its PPS but not its SPS.
        let out = sets
            .process(Bytes::from(stream(&[
                (AUD, true),
                (PPS, true),
                (IDR, false),
            ])))
            .unwrap();
        assert_eq!(
            out.data,
            stream(&[(AUD, true), (SPS, true), (PPS, true), (IDR, false)]).as_slice()
        );
        assert_eq!(
            kinds(&out.data),
            [NalType::Aud, NalType::Sps, NalType::Pps, NalType::Idr]
        );
    }

    #[test]
    fn remembers_the_latest_parameter_sets() {
        let mut sets = ParameterSets::new();
        sets.process(Bytes::from(stream(&[
            (SPS, true),
            (PPS, true),
            (IDR, true),
        ])))
        .unwrap();
        // A resolution change: new SPS/PPS, then bare IDRs must get the new ones.
        let sps2: &[u8] = &[0x67, 0x42, 0xc0, 0x28, 0xaa];
        let pps2: &[u8] = &[0x68, 0xce, 0x3c, 0x81];
        sets.process(Bytes::from(stream(&[
            (sps2, true),
            (pps2, true),
            (IDR, true),
        ])))
        .unwrap();
        let out = sets.process(Bytes::from(stream(&[(IDR, true)]))).unwrap();
        assert_eq!(
            out.data,
            stream(&[(sps2, true), (pps2, true), (IDR, true)]).as_slice()
        );
    }

    #[test]
    fn an_idr_before_any_parameter_sets_is_an_error() {
        let mut sets = ParameterSets::new();
        assert_eq!(
            sets.process(Bytes::from(stream(&[(IDR, true)])))
                .unwrap_err(),
            AnnexBError::NoParameterSets
        );
        // Deltas before the first IDR are not an error (the caller waits for a keyframe).
        assert!(
            !sets
                .process(Bytes::from(stream(&[(P, true)])))
                .unwrap()
                .keyframe
        );
    }
}
