//! GB/T 32960.3 gateway hot path, sans-IO: framing of a TCP byte stream (2016 `##` / 2025 `$$`
//! editions, length and BCC checks, resynchronisation) and real-time / reissued data units reduced to
//! what the gateway uploads (readings in platform units, the alarm summary, the data unit's time).
//!
//! Panic-free by construction: every read is bounds-checked (`Cursor` returns `None` past the end), so
//! no input can unwind into Python. The Python codec (voltcloud_gateways.gbt32960) keeps the typed
//! block decoder for tools and tests; tests/conformance/test_gbt32960_rust.py holds both to the same values.

use crate::gil::without_gil;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

pub const HEADER_LEN: usize = 24;
pub const MAX_DATA_LEN: usize = 65_535;
const VIN_LEN: usize = 17;
const ENCRYPTION_NONE: u8 = 0x01;
const REALTIME: u8 = 0x02;
const REISSUE: u8 = 0x03;
/// Below this many buffered bytes the GIL is kept: releasing it costs more than the framing.
const DETACH_BYTES: usize = 16 * 1024;

// ---- errors ----

/// Why bytes were refused: the codes of the Python `Reason` enum (frame.py), which names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameErr {
    pub reason: &'static str,
    pub message: String,
    pub offset: usize,
}

fn err(reason: &'static str, message: String, offset: usize) -> FrameErr {
    FrameErr {
        reason,
        message,
        offset,
    }
}

pub const GARBAGE: &str = "garbage";
pub const SHORT_FRAME: &str = "short_frame";
pub const LENGTH_MISMATCH: &str = "length_mismatch";
pub const LENGTH_TOO_LARGE: &str = "length_too_large";
pub const BAD_BCC: &str = "bad_bcc";
pub const BAD_VIN: &str = "bad_vin";
pub const TRUNCATED: &str = "truncated";
pub const TRAILING_BYTES: &str = "trailing_bytes";
pub const UNKNOWN_INFO_TYPE: &str = "unknown_info_type";

// ---- framing ----

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub edition: u16,
    pub command: u8,
    pub flag: u8,
    pub vin: String,
    pub encryption: u8,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Frame(RawFrame),
    Error(FrameErr),
}

pub fn bcc(data: &[u8]) -> u8 {
    data.iter().fold(0, |acc, b| acc ^ b)
}

fn is_marker(b: u8) -> bool {
    b == b'#' || b == b'$'
}

fn edition_of(first: u8) -> u16 {
    if first == b'#' {
        2016
    } else {
        2025
    }
}

/// The frame at buf[start .. start + 24 + data_len + 1]; the caller has checked the bounds.
fn decode_at(buf: &[u8], start: usize, data_len: usize) -> Result<RawFrame, FrameErr> {
    let end = start + HEADER_LEN + data_len;
    let (Some(body), Some(&check)) = (buf.get(start + 2..end), buf.get(end)) else {
        return Err(err(SHORT_FRAME, "short frame".into(), 0));
    };
    if bcc(body) != check {
        let message = format!("BCC {check:02X} does not match the frame");
        return Err(err(BAD_BCC, message, end - start));
    }
    let raw_vin = &body[2..2 + VIN_LEN];
    let text_len = raw_vin.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let text = &raw_vin[..text_len];
    // all-zero is allowed: relay platforms send their own commands (0x05/0x06) without a vehicle
    if text.iter().any(|&b| !(0x20..=0x7E).contains(&b)) {
        return Err(err(BAD_VIN, "VIN is not printable ASCII".into(), 4));
    }
    Ok(RawFrame {
        edition: edition_of(buf[start]),
        command: body[0],
        flag: body[1],
        vin: text.iter().map(|&b| char::from(b)).collect(),
        encryption: body[19],
        data: body[22..].to_vec(),
    })
}

/// One whole frame in `raw` (exactly: trailing bytes are a length mismatch).
pub fn decode_frame(raw: &[u8], max_data_len: usize) -> Result<RawFrame, FrameErr> {
    if raw.len() < 2 || !is_marker(raw[0]) || raw[1] != raw[0] {
        return Err(err(GARBAGE, "no start marker ('##' or '$$')".into(), 0));
    }
    if raw.len() < HEADER_LEN + 1 {
        return Err(err(SHORT_FRAME, format!("short frame ({} bytes)", raw.len()), 0));
    }
    let data_len = usize::from(u16::from_be_bytes([raw[22], raw[23]]));
    if data_len > max_data_len {
        let message = format!("data length {data_len} above the limit {max_data_len}");
        return Err(err(LENGTH_TOO_LARGE, message, 22));
    }
    let have = raw.len() - HEADER_LEN - 1;
    if have != data_len {
        let message = format!("length mismatch: header says {data_len}, frame has {have} data bytes");
        return Err(err(LENGTH_MISMATCH, message, 22));
    }
    decode_at(raw, 0, data_len)
}

/// Cuts a byte stream into frames. Memory is bounded: the buffer holds at most one frame
/// (24 + max_data_len + 1 bytes) plus the chunk being fed. Garbage before a start marker is reported once
/// per run; a declared length above `max_data_len` or a bad BCC/VIN drops the first start byte and
/// resynchronises on the next marker (the length may be what was corrupted).
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    suppress: bool,
    pub dropped: u64,
    pub max_data_len: usize,
}

impl Framer {
    pub fn new(max_data_len: usize) -> Self {
        Framer {
            max_data_len,
            ..Framer::default()
        }
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Item>) {
        self.buf.extend_from_slice(chunk);
        let mut pos = 0;
        loop {
            let Some(start) = self.find_start(pos, out) else {
                // keep a trailing '#'/'$' that may be the first half of a marker, unless it was consumed
                // (the BCC of the frame just cut: 2 frames in 256 end in one)
                let unread = self.buf.len() > pos;
                let keep = usize::from(unread && self.buf.last().is_some_and(|&b| is_marker(b)));
                pos = self.buf.len() - keep;
                break;
            };
            pos = start;
            let buf = &self.buf;
            if buf.len() - pos < HEADER_LEN {
                break;
            }
            let data_len = usize::from(u16::from_be_bytes([buf[pos + 22], buf[pos + 23]]));
            if data_len > self.max_data_len {
                let message = format!("data length {data_len} above the limit");
                out.push(Item::Error(err(LENGTH_TOO_LARGE, message, 22)));
                pos += 1;
                self.suppress = true;
                continue;
            }
            let total = HEADER_LEN + data_len + 1;
            if buf.len() - pos < total {
                break;
            }
            match decode_at(buf, pos, data_len) {
                Ok(frame) => {
                    out.push(Item::Frame(frame));
                    pos += total;
                    self.suppress = false;
                }
                Err(error) => {
                    out.push(Item::Error(error));
                    pos += 1;
                    self.suppress = true;
                }
            }
        }
        self.buf.drain(..pos);
    }

    fn find_start(&mut self, pos: usize, out: &mut Vec<Item>) -> Option<usize> {
        let buf = &self.buf;
        let len = buf.len();
        if len - pos > 2 && is_marker(buf[pos]) && buf[pos + 1] == buf[pos] && buf[pos + 2] != buf[pos] {
            return Some(pos); // the common case: the next frame starts right here
        }
        let found = (pos..len.saturating_sub(1)).find(|&i| is_marker(buf[i]) && buf[i + 1] == buf[i]);
        if let Some(mut start) = found {
            // '###': no command id is 0x23/0x24, so the marker is the last two of the run
            while start + 2 < len && buf[start + 2] == buf[start] {
                start += 1;
            }
            self.drop_bytes(start - pos, out);
            return Some(start);
        }
        let end = if buf.last().is_some_and(|&b| is_marker(b)) {
            len - 1
        } else {
            len
        };
        self.drop_bytes(end.saturating_sub(pos), out);
        None
    }

    fn drop_bytes(&mut self, count: usize, out: &mut Vec<Item>) {
        // one GARBAGE error per run of junk, even across feeds; none right after an error that explains it
        self.dropped += count as u64;
        if count > 0 && !self.suppress {
            let message = format!("{count} bytes before a start marker");
            out.push(Item::Error(err(GARBAGE, message, 0)));
            self.suppress = true;
        }
    }

    /// End of stream: whatever is buffered is an incomplete frame.
    pub fn finish(&mut self) -> Option<FrameErr> {
        if self.buf.is_empty() {
            return None;
        }
        let left = self.buf.len();
        self.buf.clear();
        let message = format!("stream ended inside a frame ({left} bytes buffered)");
        Some(err(SHORT_FRAME, message, 0))
    }
}

// ---- real-time data units ----

/// Bounds-checked big-endian reads; `None` past the end (the data unit ended inside a field).
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn left(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// A field of `width` bytes: raw * scale + offset, or None for the invalid (0xFF..) / abnormal
/// (0xFF..FE) markers.
fn linear(raw: u32, width: u32, scale: i64, offset: i64) -> Option<i64> {
    let top = if width >= 4 {
        u32::MAX
    } else {
        (1u32 << (8 * width)) - 1
    };
    (raw < top - 1).then(|| i64::from(raw) * scale + offset)
}

fn be(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b))
}

/// The readings a data unit yields, in the order the gateway uploads them (`Slot` indexes the metric ids
/// the caller gives `Gbt32960Telemetry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Speed = 0,
    Odometer,
    Voltage,
    Current,
    Soc,
    Insulation,
    Latitude,
    Longitude,
    CellMax,
    CellMin,
    TempMax,
}
pub const SLOTS: usize = 11;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlarmSummary {
    pub max_level: Option<u8>,
    pub general_flags: u32,
    pub fault_codes: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Realtime {
    /// Beijing time as sent (year - 2000, month, day, hour, minute, second).
    pub time: [u8; 6],
    /// The time in Unix milliseconds UTC, or None when it is not a calendar time.
    pub time_ms: Option<i64>,
    pub readings: Vec<(Slot, i64)>,
    pub alarm: Option<AlarmSummary>,
}

/// What the first block of each kind said (later blocks of a kind are ignored, as the Python side does).
#[derive(Default)]
struct Seen {
    vehicle: Option<Vec<(Slot, i64)>>,
    position: Option<Vec<(Slot, i64)>>,
    extremes: Option<Vec<(Slot, i64)>>,
    cells: Option<(Option<(i64, i64)>, bool)>, // (max, min) of valid cells, all packs complete
    probes: Option<Option<i64>>,               // max valid probe temperature
    alarm: Option<AlarmSummary>,
}

pub fn decode_realtime(data: &[u8], edition: u16) -> Result<Realtime, FrameErr> {
    let v2016 = edition == 2016;
    let mut r = Cursor { data, pos: 0 };
    let Some(time) = r.take(6) else {
        let message = format!(
            "real-time data unit without its time: needs 6 bytes at offset 0, {} left",
            data.len()
        );
        return Err(err(TRUNCATED, message, 0));
    };
    let mut seen = Seen::default();
    while r.left() > 0 {
        let at = r.pos;
        let type_id = r.u8().unwrap_or_default();
        let done = match type_id {
            0x80..=0xFE => r.u16().and_then(|n| r.skip(usize::from(n))),
            0xFF if !v2016 => {
                let signed = signature(&mut r);
                if signed.is_some() && r.left() > 0 {
                    let message = "bytes after the signature".to_string();
                    return Err(err(TRAILING_BYTES, message, r.pos));
                }
                signed
            }
            _ => match block(&mut r, type_id, v2016, &mut seen) {
                Known::Yes(done) => done,
                Known::No => {
                    let message = format!("unknown information type 0x{type_id:02X}");
                    return Err(err(UNKNOWN_INFO_TYPE, message, at));
                }
            },
        };
        if done.is_none() {
            let message = format!("information type 0x{type_id:02X}: the data unit ends inside it");
            return Err(err(TRUNCATED, message, at));
        }
    }
    let time: [u8; 6] = [time[0], time[1], time[2], time[3], time[4], time[5]];
    let alarm = seen.alarm;
    Ok(Realtime {
        time,
        time_ms: beijing_to_unix_ms(&time),
        readings: seen.readings(),
        alarm,
    })
}

enum Known {
    Yes(Option<()>),
    No,
}

fn block(r: &mut Cursor<'_>, type_id: u8, v2016: bool, seen: &mut Seen) -> Known {
    Known::Yes(match (type_id, v2016) {
        (0x01, _) => vehicle(r, v2016, seen),
        (0x02, _) => r
            .u8()
            .and_then(|n| r.skip(usize::from(n) * if v2016 { 12 } else { 10 })),
        (0x03, true) => fuel_cell(r),
        (0x03, false) => r.skip(12),                    // hydrogen system
        (0x04, _) => r.skip(if v2016 { 5 } else { 2 }), // engine
        (0x05, _) => position(r, v2016, seen),
        (0x06, true) => extremes(r, seen),
        (0x07, true) | (0x06, false) => alarms(r, v2016, seen),
        (0x08, true) | (0x07, false) => cells(r, v2016, seen),
        (0x09, true) | (0x08, false) => probes(r, seen),
        (0x30, false) => stacks(r),
        (0x31, false) => supercap(r),
        (0x32, false) => r.skip(18), // super-capacitor extremes
        _ => return Known::No,
    })
}

fn vehicle(r: &mut Cursor<'_>, v2016: bool, seen: &mut Seen) -> Option<()> {
    let b = r.take(if v2016 { 20 } else { 18 })?;
    let current_offset = if v2016 { -1_000_000 } else { -3_000_000 };
    let insulation = be(&b[16..18]);
    let values = [
        (Slot::Speed, linear(be(&b[3..5]), 2, 100, 0)),
        (Slot::Odometer, linear(be(&b[5..9]), 4, 100, 0)),
        (Slot::Voltage, linear(be(&b[9..11]), 2, 100, 0)),
        // the platform counts current into the battery as positive; the standard the other way round
        (
            Slot::Current,
            linear(be(&b[11..13]), 2, 100, current_offset).map(|v| -v),
        ),
        (Slot::Soc, linear(u32::from(b[13]), 1, 10, 0)),
        // 2016 declares insulation without markers
        (
            Slot::Insulation,
            if v2016 {
                Some(i64::from(insulation))
            } else {
                linear(insulation, 2, 1, 0)
            },
        ),
    ];
    if seen.vehicle.is_none() {
        seen.vehicle = Some(values.iter().filter_map(|&(s, v)| Some((s, v?))).collect());
    }
    Some(())
}

fn fuel_cell(r: &mut Cursor<'_>) -> Option<()> {
    r.skip(6)?;
    let probes = r.u16()?;
    r.skip(usize::from(probes))?;
    r.skip(10)
}

fn position(r: &mut Cursor<'_>, v2016: bool, seen: &mut Seen) -> Option<()> {
    let b = r.take(if v2016 { 9 } else { 10 })?;
    let status = b[0];
    let coords = &b[b.len() - 8..];
    let lng = linear(be(&coords[..4]), 4, 1, 0);
    let lat = linear(be(&coords[4..]), 4, 1, 0);
    if seen.position.is_none() {
        let mut out = Vec::new();
        // status bit0: no valid fix; bit1 south; bit2 west
        if let (0, Some(lat), Some(lng)) = (status & 0x01, lat, lng) {
            out.push((Slot::Latitude, if status & 0x02 != 0 { -lat } else { lat }));
            out.push((Slot::Longitude, if status & 0x04 != 0 { -lng } else { lng }));
        }
        seen.position = Some(out);
    }
    Some(())
}

fn extremes(r: &mut Cursor<'_>, seen: &mut Seen) -> Option<()> {
    let b = r.take(14)?;
    let values = [
        (Slot::CellMax, linear(be(&b[2..4]), 2, 1, 0)),
        (Slot::CellMin, linear(be(&b[6..8]), 2, 1, 0)),
        (Slot::TempMax, linear(u32::from(b[10]), 1, 1000, -40_000)),
    ];
    if seen.extremes.is_none() {
        seen.extremes = Some(values.iter().filter_map(|&(s, v)| Some((s, v?))).collect());
    }
    Some(())
}

fn alarms(r: &mut Cursor<'_>, v2016: bool, seen: &mut Seen) -> Option<()> {
    let level = r.u8()?;
    let general_flags = r.u32()?;
    let mut fault_codes = 0;
    for _ in 0..4 {
        let n = r.u8()?;
        r.skip(4 * usize::from(n))?;
        fault_codes += u32::from(n);
    }
    if !v2016 {
        let n = r.u8()?;
        r.skip(2 * usize::from(n))?;
    }
    if seen.alarm.is_none() {
        seen.alarm = Some(AlarmSummary {
            max_level: (level < 0xFE).then_some(level),
            general_flags,
            fault_codes,
        });
    }
    Some(())
}

fn cells(r: &mut Cursor<'_>, v2016: bool, seen: &mut Seen) -> Option<()> {
    let mut range: Option<(i64, i64)> = None;
    let mut complete = true;
    for _ in 0..r.u8()? {
        r.skip(5)?; // pack number, voltage, current
        let count = if v2016 {
            let (total, start) = (r.u16()?, r.u16()?);
            let count = r.u8()?;
            // 2016 packs may span frames: extremes only from a frame holding every cell
            complete &= start == 1 && u16::from(count) == total;
            usize::from(count)
        } else {
            usize::from(r.u16()?)
        };
        for pair in r.take(2 * count)?.chunks_exact(2) {
            if let Some(v) = linear(be(pair), 2, 1, 0) {
                range = Some(range.map_or((v, v), |(hi, lo)| (hi.max(v), lo.min(v))));
            }
        }
    }
    if seen.cells.is_none() {
        seen.cells = Some((range, complete));
    }
    Some(())
}

fn probes(r: &mut Cursor<'_>, seen: &mut Seen) -> Option<()> {
    let mut max: Option<i64> = None;
    for _ in 0..r.u8()? {
        r.skip(1)?;
        let count = r.u16()?;
        for &raw in r.take(usize::from(count))? {
            if let Some(v) = linear(u32::from(raw), 1, 1000, -40_000) {
                max = Some(max.map_or(v, |m| m.max(v)));
            }
        }
    }
    if seen.probes.is_none() {
        seen.probes = Some(max);
    }
    Some(())
}

fn stacks(r: &mut Cursor<'_>) -> Option<()> {
    for _ in 0..r.u8()? {
        r.skip(8)?;
        let probes = r.u16()?;
        r.skip(usize::from(probes))?;
    }
    Some(())
}

fn supercap(r: &mut Cursor<'_>) -> Option<()> {
    r.skip(5)?;
    let cells = r.u16()?;
    r.skip(2 * usize::from(cells))?;
    let probes = r.u16()?;
    r.skip(usize::from(probes))
}

fn signature(r: &mut Cursor<'_>) -> Option<()> {
    r.skip(1)?;
    let r_len = r.u16()?;
    r.skip(usize::from(r_len))?;
    let s_len = r.u16()?;
    r.skip(usize::from(s_len))
}

impl Seen {
    fn readings(self) -> Vec<(Slot, i64)> {
        let mut out = self.vehicle.unwrap_or_default();
        out.extend(self.position.unwrap_or_default());
        if let Some(extremes) = self.extremes {
            out.extend(extremes);
            return out;
        }
        // 2025 has no extremes block but sends every cell in one frame: derive them
        if let Some((Some((hi, lo)), true)) = self.cells {
            out.push((Slot::CellMax, hi));
            out.push((Slot::CellMin, lo));
        }
        if let Some(Some(max)) = self.probes {
            out.push((Slot::TempMax, max));
        }
        out
    }
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Beijing time (UTC+8) as sent -> Unix ms UTC; None unless it is a calendar time (hour 55 happens).
pub fn beijing_to_unix_ms(t: &[u8; 6]) -> Option<i64> {
    let year = 2000 + i64::from(t[0]);
    let (month, day) = (i64::from(t[1]), i64::from(t[2]));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || t[3] > 23 || t[4] > 59 || t[5] > 59 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400
        + i64::from(t[3]) * 3_600
        + i64::from(t[4]) * 60
        + i64::from(t[5])
        - 8 * 3_600;
    Some(seconds * 1_000)
}

/// A whole frame: start marker, header, data unit and BCC.
pub fn encode_frame(edition: u16, command: u8, flag: u8, vin: &[u8], data: &[u8], encryption: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + data.len() + 1);
    out.extend_from_slice(if edition == 2016 { b"##" } else { b"$$" });
    out.extend_from_slice(&[command, flag]);
    out.extend_from_slice(vin);
    out.resize(4 + VIN_LEN, 0);
    out.push(encryption);
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out.push(bcc(&out[2..]));
    out
}

// ---- Python ----

/// A structurally valid frame (start marker, length and BCC checked, VIN printable).
#[pyclass(frozen, eq, module = "voltcloud._core", name = "Gbt32960Frame")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyFrame(RawFrame);

#[pymethods]
impl PyFrame {
    #[new]
    fn new(edition: u16, command: u8, flag: u8, vin: String, encryption: u8, data: &[u8]) -> PyResult<Self> {
        check_edition(edition)?;
        let frame = RawFrame {
            edition,
            command,
            flag,
            vin,
            encryption,
            data: data.to_vec(),
        };
        Ok(PyFrame(frame))
    }
    #[getter]
    fn edition(&self) -> u16 {
        self.0.edition
    }
    #[getter]
    fn command(&self) -> u8 {
        self.0.command
    }
    #[getter]
    fn flag(&self) -> u8 {
        self.0.flag
    }
    #[getter]
    fn vin(&self) -> &str {
        &self.0.vin
    }
    #[getter]
    fn encryption(&self) -> u8 {
        self.0.encryption
    }
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.data)
    }
    #[getter]
    fn encrypted(&self) -> bool {
        self.0.encryption != ENCRYPTION_NONE
    }
    /// The platform's answer to this frame: command and VIN echoed with `flag`, `data` as the data unit.
    fn answer<'py>(&self, py: Python<'py>, flag: u8, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        if data.len() > MAX_DATA_LEN {
            return Err(PyValueError::new_err("data: longer than 65535 bytes"));
        }
        let f = &self.0;
        let raw = encode_frame(
            f.edition,
            f.command,
            flag,
            f.vin.as_bytes(),
            data,
            ENCRYPTION_NONE,
        );
        Ok(PyBytes::new(py, &raw))
    }
    fn __repr__(&self) -> String {
        let f = &self.0;
        format!(
            "Gbt32960Frame(edition={}, command=0x{:02X}, flag=0x{:02X}, vin={:?}, encryption={}, data=<{} bytes>)",
            f.edition,
            f.command,
            f.flag,
            f.vin,
            f.encryption,
            f.data.len()
        )
    }
}

/// Refused bytes: `reason` is a code of the Python `Reason` enum; `offset` is within the frame (or the
/// stream chunk for "garbage").
#[pyclass(frozen, eq, module = "voltcloud._core", name = "Gbt32960FrameError")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyFrameError {
    #[pyo3(get)]
    reason: String,
    #[pyo3(get)]
    message: String,
    #[pyo3(get)]
    offset: usize,
}

#[pymethods]
impl PyFrameError {
    #[new]
    #[pyo3(signature = (reason, message, offset = 0))]
    fn new(reason: String, message: String, offset: usize) -> Self {
        PyFrameError {
            reason,
            message,
            offset,
        }
    }
    fn __repr__(&self) -> String {
        format!(
            "Gbt32960FrameError({:?}, {:?}, {})",
            self.reason, self.message, self.offset
        )
    }
}

impl From<FrameErr> for PyFrameError {
    fn from(e: FrameErr) -> Self {
        PyFrameError {
            reason: e.reason.to_string(),
            message: e.message,
            offset: e.offset,
        }
    }
}

fn check_edition(edition: u16) -> PyResult<()> {
    if edition == 2016 || edition == 2025 {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "edition: {edition} is neither 2016 nor 2025"
        )))
    }
}

fn check_max_data_len(max_data_len: usize) -> PyResult<usize> {
    if max_data_len <= MAX_DATA_LEN {
        Ok(max_data_len)
    } else {
        Err(PyValueError::new_err("max_data_len must be within 0..65535"))
    }
}

fn item_object<'py>(py: Python<'py>, item: Item) -> PyResult<Bound<'py, PyAny>> {
    Ok(match item {
        Item::Frame(frame) => Bound::new(py, PyFrame(frame))?.into_any(),
        Item::Error(error) => Bound::new(py, PyFrameError::from(error))?.into_any(),
    })
}

/// The sans-IO framer: `feed(chunk)` returns the frames and framing errors completed so far.
#[pyclass(module = "voltcloud._core", name = "Gbt32960Reader")]
pub struct PyReader(Framer);

#[pymethods]
impl PyReader {
    #[new]
    #[pyo3(signature = (max_data_len = MAX_DATA_LEN))]
    fn new(max_data_len: usize) -> PyResult<Self> {
        Ok(PyReader(Framer::new(check_max_data_len(max_data_len)?)))
    }
    #[getter]
    fn max_data_len(&self) -> usize {
        self.0.max_data_len
    }
    /// Bytes held for a frame not yet complete.
    #[getter]
    fn buffered(&self) -> usize {
        self.0.buffered()
    }
    /// Bytes dropped as garbage so far (a connection's junk budget is checked on it).
    #[getter]
    fn dropped(&self) -> u64 {
        self.0.dropped
    }
    fn feed<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let mut items = Vec::new();
        let framer = &mut self.0;
        if chunk.len() + framer.buffered() >= DETACH_BYTES {
            without_gil(py, || framer.feed(chunk, &mut items));
        } else {
            framer.feed(chunk, &mut items);
        }
        let list = PyList::empty(py);
        for item in items {
            list.append(item_object(py, item)?)?;
        }
        Ok(list)
    }
    /// End of stream: whatever is buffered is an incomplete frame.
    fn finish(&mut self) -> Vec<PyFrameError> {
        self.0.finish().into_iter().map(PyFrameError::from).collect()
    }
}

#[pyfunction]
#[pyo3(signature = (raw, max_data_len = MAX_DATA_LEN))]
fn gbt32960_decode_frame<'py>(
    py: Python<'py>,
    raw: &[u8],
    max_data_len: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let item = match decode_frame(raw, check_max_data_len(max_data_len)?) {
        Ok(frame) => Item::Frame(frame),
        Err(error) => Item::Error(error),
    };
    item_object(py, item)
}

#[pyfunction]
fn gbt32960_bcc(data: &[u8]) -> u8 {
    bcc(data)
}

#[pyfunction]
#[pyo3(signature = (edition, command, flag, vin, data, encryption = ENCRYPTION_NONE))]
fn gbt32960_encode_frame<'py>(
    py: Python<'py>,
    edition: u16,
    command: u8,
    flag: u8,
    vin: &str,
    data: &[u8],
    encryption: u8,
) -> PyResult<Bound<'py, PyBytes>> {
    check_edition(edition)?;
    if !vin.is_ascii() || vin.len() > VIN_LEN {
        return Err(PyValueError::new_err("vin: not ASCII or longer than 17 bytes"));
    }
    if data.len() > MAX_DATA_LEN {
        return Err(PyValueError::new_err("data: longer than 65535 bytes"));
    }
    let raw = encode_frame(edition, command, flag, vin.as_bytes(), data, encryption);
    Ok(PyBytes::new(py, &raw))
}

/// Real-time (0x02) and reissued (0x03) frames -> what the gateway uploads. `metric_ids` are the
/// platform's metric numbers for speed, odometer, voltage, current, SOC, insulation, latitude, longitude,
/// max cell voltage, min cell voltage, max temperature (in that order).
#[pyclass(frozen, module = "voltcloud._core", name = "Gbt32960Telemetry")]
pub struct PyTelemetry {
    metric_ids: [i64; SLOTS],
}

#[pymethods]
impl PyTelemetry {
    #[new]
    fn new(metric_ids: Vec<i64>) -> PyResult<Self> {
        let metric_ids = metric_ids
            .try_into()
            .map_err(|_| PyValueError::new_err(format!("metric_ids: needs {SLOTS} metric numbers")))?;
        Ok(PyTelemetry { metric_ids })
    }
    /// (error, time_ms, metrics, values, alarm) of a real-time or reissue frame: `error` a FrameError when
    /// the data unit is not decodable (the rest is then empty); `time_ms` Unix ms UTC or None when the time
    /// is not a calendar time; `alarm` (max level or None for a marker, general flags, fault-code count)
    /// of the first alarm block, or None.
    fn decode<'py>(&self, py: Python<'py>, frame: &PyFrame) -> PyResult<Bound<'py, PyTuple>> {
        let f = &frame.0;
        if f.command != REALTIME && f.command != REISSUE {
            return Err(PyValueError::new_err(
                "frame: not a real-time (0x02) or reissue (0x03) frame",
            ));
        }
        if f.encryption != ENCRYPTION_NONE {
            return Err(PyValueError::new_err("frame: the data unit is encrypted"));
        }
        match decode_realtime(&f.data, f.edition) {
            Err(error) => {
                let error = Bound::new(py, PyFrameError::from(error))?;
                (error, py.None(), PyList::empty(py), PyList::empty(py), py.None()).into_pyobject(py)
            }
            Ok(data) => {
                let metrics = data.readings.iter().map(|&(s, _)| self.metric_ids[s as usize]);
                let values = data.readings.iter().map(|&(_, v)| v);
                let alarm = data.alarm.map(|a| (a.max_level, a.general_flags, a.fault_codes));
                let (metrics, values) = (PyList::new(py, metrics)?, PyList::new(py, values)?);
                (py.None(), data.time_ms, metrics, values, alarm).into_pyobject(py)
            }
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFrame>()?;
    m.add_class::<PyFrameError>()?;
    m.add_class::<PyReader>()?;
    m.add_class::<PyTelemetry>()?;
    m.add_function(wrap_pyfunction!(gbt32960_decode_frame, m)?)?;
    m.add_function(wrap_pyfunction!(gbt32960_bcc, m)?)?;
    m.add_function(wrap_pyfunction!(gbt32960_encode_frame, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VIN: &[u8] = b"LGHC4V1D3HE202652";

    fn realtime_2016() -> Vec<u8> {
        let mut data = vec![26, 12, 3, 20, 15, 30];
        // vehicle: speed 65.4 km/h, odometer 1234.56 km, 384.5 V, -12.3 A, SOC 81 %, insulation 5000
        data.extend([
            0x01, 1, 3, 1, 0x02, 0x8E, 0x00, 0x01, 0xE2, 0x40, 0x0F, 0x05, 0x26, 0x95, 81, 1, 0x2E,
        ]);
        data.extend([0x13, 0x88, 12, 0]);
        // position: north-east fix
        data.extend([0x05, 0, 0x06, 0xF0, 0x14, 0x48, 0x02, 0x61, 0x13, 0xEF]);
        // alarms: level 3, flag bit 11, one storage fault
        data.extend([0x07, 3, 0, 0, 0x08, 0, 1, 0, 0, 0xDE, 0xAD, 0, 0, 0]);
        // OEM block skipped by its length
        data.extend([0x80, 0, 2, 0xAA, 0xBB]);
        data
    }

    #[test]
    fn framer_cuts_frames_and_resyncs_after_garbage() {
        let frame = encode_frame(2016, REALTIME, 0xFE, VIN, &realtime_2016(), 1);
        let mut stream = b"junk".to_vec();
        stream.extend(&frame);
        stream.extend(&frame);
        let mut framer = Framer::new(MAX_DATA_LEN);
        let mut items = Vec::new();
        for chunk in stream.chunks(7) {
            framer.feed(chunk, &mut items);
        }
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[0], Item::Error(e) if e.reason == GARBAGE));
        assert!(matches!(&items[2], Item::Frame(f) if f.vin == "LGHC4V1D3HE202652" && f.edition == 2016));
        assert_eq!(framer.buffered(), 0);
        assert_eq!(framer.dropped, 4);
    }

    #[test]
    fn a_frame_ending_in_a_marker_byte_leaves_nothing_behind() {
        // find a data unit whose frame's BCC is '#' or '$', then feed frame by frame
        let frame = (0u8..=255)
            .map(|b| encode_frame(2016, 0x07, 0xFE, VIN, &[b], 1))
            .find(|f| f.last().is_some_and(|&b| is_marker(b)))
            .unwrap();
        let mut framer = Framer::new(MAX_DATA_LEN);
        let mut items = Vec::new();
        for _ in 0..3 {
            framer.feed(&frame, &mut items);
            assert_eq!(framer.buffered(), 0);
        }
        assert!(items.iter().all(|i| matches!(i, Item::Frame(_))), "{items:?}");
        assert_eq!((items.len(), framer.dropped), (3, 0));
    }

    #[test]
    fn bad_bcc_is_refused_and_the_next_frame_found() {
        let frame = encode_frame(2025, 0x07, 0xFE, VIN, &[], 1);
        let mut bad = frame.clone();
        *bad.last_mut().unwrap() ^= 1;
        let mut framer = Framer::new(MAX_DATA_LEN);
        let mut items = Vec::new();
        framer.feed(&[bad, frame].concat(), &mut items);
        assert!(matches!(&items[0], Item::Error(e) if e.reason == BAD_BCC));
        assert!(matches!(items.last(), Some(Item::Frame(f)) if f.command == 0x07));
    }

    #[test]
    fn realtime_readings_in_platform_units() {
        let data = decode_realtime(&realtime_2016(), 2016).unwrap();
        assert_eq!(
            data.readings,
            vec![
                (Slot::Speed, 65_400),
                (Slot::Odometer, 12_345_600),
                (Slot::Voltage, 384_500),
                (Slot::Current, 12_300),
                (Slot::Soc, 810),
                (Slot::Insulation, 5_000),
                (Slot::Latitude, 39_916_527),
                (Slot::Longitude, 116_397_128),
            ]
        );
        let alarm = AlarmSummary {
            max_level: Some(3),
            general_flags: 1 << 11,
            fault_codes: 1,
        };
        assert_eq!(data.alarm, Some(alarm));
        // 2026-12-03 20:15:30 Beijing = 12:15:30 UTC
        assert_eq!(data.time_ms, Some(1_796_300_130_000));
    }

    #[test]
    fn markers_are_not_readings_and_truncation_is_refused() {
        let mut data = realtime_2016();
        data[10..12].copy_from_slice(&[0xFF, 0xFE]); // speed abnormal
        let decoded = decode_realtime(&data, 2016).unwrap();
        assert!(decoded.readings.iter().all(|&(s, _)| s != Slot::Speed));
        let cut = decode_realtime(&data[..20], 2016).unwrap_err();
        assert_eq!((cut.reason, cut.offset), (TRUNCATED, 6));
        let unknown = decode_realtime(&[26, 1, 1, 0, 0, 0, 0x40], 2016).unwrap_err();
        assert_eq!((unknown.reason, unknown.offset), (UNKNOWN_INFO_TYPE, 6));
    }

    #[test]
    fn impossible_times_have_no_instant() {
        assert_eq!(beijing_to_unix_ms(&[26, 2, 29, 0, 0, 0]), None);
        assert!(beijing_to_unix_ms(&[28, 2, 29, 0, 0, 0]).is_some());
        assert_eq!(beijing_to_unix_ms(&[19, 1, 22, 55, 0, 0]), None);
        assert_eq!(beijing_to_unix_ms(&[0, 1, 1, 8, 0, 0]), Some(946_684_800_000));
    }

    proptest! {
        #[test]
        fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), step in 1usize..64) {
            let _ = decode_frame(&bytes, MAX_DATA_LEN);
            let _ = decode_realtime(&bytes, 2016);
            let _ = decode_realtime(&bytes, 2025);
            let mut framer = Framer::new(256);
            let mut items = Vec::new();
            for chunk in bytes.chunks(step) {
                framer.feed(chunk, &mut items);
                prop_assert!(framer.buffered() <= HEADER_LEN + 256 + 1 + step);
            }
            for item in items {
                if let Item::Frame(f) = item {
                    let _ = decode_realtime(&f.data, f.edition);
                }
            }
        }

        #[test]
        fn chunking_does_not_change_the_frames(cut in 0usize..400, flips in proptest::collection::vec(0usize..400, 0..3)) {
            let frame = encode_frame(2016, REALTIME, 0xFE, VIN, &realtime_2016(), 1);
            let mut stream = [frame.clone(), frame.clone(), frame].concat();
            for i in flips {
                let n = stream.len();
                stream[i % n] ^= 0x10;
            }
            let mut whole = Vec::new();
            Framer::new(MAX_DATA_LEN).feed(&stream, &mut whole);
            let mut framer = Framer::new(MAX_DATA_LEN);
            let mut parts = Vec::new();
            let cut = cut.min(stream.len());
            framer.feed(&stream[..cut], &mut parts);
            framer.feed(&stream[cut..], &mut parts);
            let frames = |items: &[Item]| items.iter().filter(|i| matches!(i, Item::Frame(_))).cloned().collect::<Vec<_>>();
            prop_assert_eq!(frames(&whole), frames(&parts));
        }
    }
}
