//! Response messages as proto3 JSON, exactly as prost-reflect writes them with the edge's
//! options (proto field names, default values written, 64-bit integers as strings), but with
//! `google.protobuf.Timestamp` and `Duration` formatted here. prost-reflect re-encodes each
//! timestamp into `prost_types` and formats it through `Display`: for a typical answer (a user,
//! a task: two or three timestamps) that was a third of the whole serialization. Every other
//! well-known type, and a timestamp or duration outside the plain range, is written by
//! prost-reflect itself, so the output is the same; the tests compare the two on every
//! response type of the contracts.

use base64::{display::Base64Display, prelude::BASE64_STANDARD};
use prost_reflect::{DynamicMessage, Kind, MapKey, ReflectMessage, SerializeOptions, Value};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// The options every edge answer is written with.
pub fn options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(true)
}

/// `msg` as proto3 JSON with [`options`].
pub struct ProtoJson<'a>(pub &'a DynamicMessage);

impl Serialize for ProtoJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let msg = self.0;
        let desc = msg.descriptor();
        match desc.full_name() {
            "google.protobuf.Timestamp" => return timestamp(msg, s),
            "google.protobuf.Duration" => return duration(msg, s),
            name if name.starts_with("google.protobuf.") => {
                return msg.serialize_with_options(s, &options());
            }
            _ => {}
        }
        if msg.extensions().next().is_some() {
            return msg.serialize_with_options(s, &options());
        }
        let mut map = s.serialize_map(None)?;
        // As prost-reflect: field-number order; fields with presence only when set.
        for field in desc.fields() {
            if field.supports_presence() && !msg.has_field(&field) {
                continue;
            }
            let value = msg.get_field(&field);
            map.serialize_entry(field.name(), &Field { value: &value, kind: &field.kind() })?;
        }
        map.end()
    }
}

struct Field<'a> {
    value: &'a Value,
    kind: &'a Kind,
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::Bool(v) => s.serialize_bool(*v),
            Value::I32(v) => s.serialize_i32(*v),
            Value::I64(v) => s.collect_str(v),
            Value::U32(v) => s.serialize_u32(*v),
            Value::U64(v) => s.collect_str(v),
            Value::F32(v) if v.is_finite() => s.serialize_f32(*v),
            Value::F64(v) if v.is_finite() => s.serialize_f64(*v),
            Value::F32(v) => s.serialize_str(non_finite(f64::from(*v))),
            Value::F64(v) => s.serialize_str(non_finite(*v)),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(v) => s.collect_str(&Base64Display::new(v, &BASE64_STANDARD)),
            Value::EnumNumber(n) => match self.kind {
                Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue" => s.serialize_none(),
                Kind::Enum(e) => match e.get_value(*n) {
                    Some(v) => s.serialize_str(v.name()),
                    None => s.serialize_i32(*n),
                },
                _ => s.serialize_i32(*n),
            },
            Value::Message(m) => ProtoJson(m).serialize(s),
            Value::List(values) => {
                let mut seq = s.serialize_seq(Some(values.len()))?;
                for value in values {
                    seq.serialize_element(&Field { value, kind: self.kind })?;
                }
                seq.end()
            }
            Value::Map(values) => {
                let value_kind = match self.kind {
                    Kind::Message(entry) if entry.is_map_entry() => {
                        entry.map_entry_value_field().kind()
                    }
                    _ => return Err(serde::ser::Error::custom("a map without its entry type")),
                };
                let mut map = s.serialize_map(Some(values.len()))?;
                for (key, value) in values {
                    map.serialize_entry(&Key(key), &Field { value, kind: &value_kind })?;
                }
                map.end()
            }
        }
    }
}

fn non_finite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

struct Key<'a>(&'a MapKey);

impl Serialize for Key<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            MapKey::Bool(v) => s.collect_str(v),
            MapKey::I32(v) => s.collect_str(v),
            MapKey::I64(v) => s.collect_str(v),
            MapKey::U32(v) => s.collect_str(v),
            MapKey::U64(v) => s.collect_str(v),
            MapKey::String(v) => s.serialize_str(v),
        }
    }
}

/// 9999-12-31T23:59:59Z, the last second RFC 3339 can write with four year digits.
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
/// As the protobuf spec: ±10,000 years.
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

fn seconds_and_nanos(msg: &DynamicMessage) -> Option<(i64, i32)> {
    let secs = match msg.get_field_by_number(1)?.as_ref() {
        Value::I64(v) => *v,
        _ => return None,
    };
    let nanos = match msg.get_field_by_number(2)?.as_ref() {
        Value::I32(v) => *v,
        _ => return None,
    };
    Some((secs, nanos))
}

/// `1970-01-01T00:00:00Z` onward (what every timestamp here is), fractions in 0, 3, 6 or 9
/// digits as prost-types writes them; anything else through prost-reflect.
fn timestamp<S: Serializer>(msg: &DynamicMessage, s: S) -> Result<S::Ok, S::Error> {
    match seconds_and_nanos(msg) {
        Some((secs @ 0..=MAX_TIMESTAMP_SECONDS, nanos @ 0..=999_999_999)) => {
            let mut buf = [0u8; 30];
            let len = write_timestamp(&mut buf, secs, nanos as u32);
            s.serialize_str(std::str::from_utf8(&buf[..len]).unwrap_or_default())
        }
        _ => msg.serialize_with_options(s, &options()),
    }
}

/// `1.5s`-style durations that are not negative; anything else through prost-reflect.
fn duration<S: Serializer>(msg: &DynamicMessage, s: S) -> Result<S::Ok, S::Error> {
    match seconds_and_nanos(msg) {
        Some((secs @ 0..=MAX_DURATION_SECONDS, nanos @ 0..=999_999_999)) => {
            let mut out = secs.to_string();
            push_fraction(&mut out, nanos as u32);
            out.push('s');
            s.serialize_str(&out)
        }
        _ => msg.serialize_with_options(s, &options()),
    }
}

/// `.123`, `.123456` or `.123456789` (none for 0), as prost-types.
fn push_fraction(out: &mut String, nanos: u32) {
    let (value, digits) = match nanos {
        0 => return,
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    out.push('.');
    let mut tmp = [b'0'; 9];
    let mut v = value;
    for i in (0..digits).rev() {
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.push_str(std::str::from_utf8(&tmp[..digits]).unwrap_or_default());
}

/// `YYYY-MM-DDTHH:MM:SS[.fff[fff[fff]]]Z` into `buf`; returns the length.
fn write_timestamp(buf: &mut [u8; 30], secs: i64, nanos: u32) -> usize {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v;
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, rem / 3600, 2);
    put(14, rem % 3600 / 60, 2);
    put(17, rem % 60, 2);
    buf[4] = b'-';
    buf[7] = b'-';
    buf[10] = b'T';
    buf[13] = b':';
    buf[16] = b':';
    let mut fraction = String::new();
    push_fraction(&mut fraction, nanos);
    let end = 19 + fraction.len();
    buf[19..end].copy_from_slice(fraction.as_bytes());
    buf[end] = b'Z';
    end + 1
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    fn ours(msg: &DynamicMessage) -> String {
        let mut out = Vec::new();
        ProtoJson(msg).serialize(&mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn theirs(msg: &DynamicMessage) -> String {
        let mut out = Vec::new();
        msg.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options()).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A small deterministic generator (xorshift64*), so a failure is reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn timestamp_msg(pool: &DescriptorPool, secs: i64, nanos: i32) -> DynamicMessage {
        let desc = pool.get_message_by_name("google.protobuf.Timestamp").unwrap();
        let mut m = DynamicMessage::new(desc);
        m.set_field_by_number(1, Value::I64(secs));
        m.set_field_by_number(2, Value::I32(nanos));
        m
    }

    #[test]
    fn timestamps_and_durations_are_written_as_prost_types_writes_them() {
        let pool = DescriptorPool::decode(skillup_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut rng = Rng(0x5eed);
        let fractions = |rng: &mut Rng| match rng.below(4) {
            0 => 0,
            1 => (rng.below(1000) * 1_000_000) as i32,
            2 => (rng.below(1_000_000) * 1000) as i32,
            _ => rng.below(1_000_000_000) as i32,
        };
        let edges = [0, 1, 59, 86_399, 86_400, 951_782_400, 4_107_542_400, MAX_TIMESTAMP_SECONDS];
        for i in 0..20_000 {
            let secs = match edges.get(i) {
                Some(s) => *s,
                None => rng.below(MAX_TIMESTAMP_SECONDS as u64 + 1) as i64,
            };
            let m = timestamp_msg(&pool, secs, fractions(&mut rng));
            assert_eq!(ours(&m), theirs(&m), "{m:?}");
        }
        // Outside the fast path: the same answers (and the same refusals) as prost-reflect.
        for (secs, nanos) in
            [(-1, 0), (-62_135_596_800, 5), (MAX_TIMESTAMP_SECONDS + 1, 0), (5, -3)]
        {
            let m = timestamp_msg(&pool, secs, nanos);
            let mut a = Vec::new();
            let mut b = Vec::new();
            let ra = ProtoJson(&m).serialize(&mut serde_json::Serializer::new(&mut a)).is_ok();
            let rb = m
                .serialize_with_options(&mut serde_json::Serializer::new(&mut b), &options())
                .is_ok();
            assert_eq!((ra, a), (rb, b), "{secs} {nanos}");
        }
        // No contract has a Duration yet: the global pool holds the well-known types.
        let desc =
            DescriptorPool::global().get_message_by_name("google.protobuf.Duration").unwrap();
        for i in 0..5_000 {
            let mut m = DynamicMessage::new(desc.clone());
            let secs =
                if i < 3 { [0, 1, MAX_DURATION_SECONDS][i] } else { rng.below(1 << 34) as i64 };
            m.set_field_by_number(1, Value::I64(secs));
            m.set_field_by_number(2, Value::I32(fractions(&mut rng)));
            assert_eq!(ours(&m), theirs(&m), "{m:?}");
        }
    }

    /// A message of `desc` with every field set to something (or left unset), recursively.
    fn random_message(
        desc: &prost_reflect::MessageDescriptor,
        rng: &mut Rng,
        depth: usize,
    ) -> DynamicMessage {
        let mut m = DynamicMessage::new(desc.clone());
        if desc.full_name() == "google.protobuf.Timestamp" {
            m.set_field_by_number(1, Value::I64(rng.below(4_000_000_000) as i64));
            m.set_field_by_number(2, Value::I32(rng.below(1_000_000_000) as i32));
            return m;
        }
        for field in desc.fields() {
            if rng.below(4) == 0 {
                continue;
            }
            let value = if field.is_list() {
                let n = rng.below(3);
                let values = (0..n).filter_map(|_| random_value(&field.kind(), rng, depth));
                Value::List(values.collect())
            } else if field.is_map() {
                let Kind::Message(entry) = field.kind() else { continue };
                let mut map = std::collections::HashMap::new();
                for _ in 0..rng.below(3) {
                    let key = match random_value(&entry.map_entry_key_field().kind(), rng, depth) {
                        Some(Value::String(s)) => MapKey::String(s),
                        Some(Value::I32(v)) => MapKey::I32(v),
                        Some(Value::I64(v)) => MapKey::I64(v),
                        Some(Value::U32(v)) => MapKey::U32(v),
                        Some(Value::U64(v)) => MapKey::U64(v),
                        Some(Value::Bool(v)) => MapKey::Bool(v),
                        _ => continue,
                    };
                    if let Some(v) = random_value(&entry.map_entry_value_field().kind(), rng, depth)
                    {
                        map.insert(key, v);
                    }
                }
                Value::Map(map)
            } else {
                match random_value(&field.kind(), rng, depth) {
                    Some(v) => v,
                    None => continue,
                }
            };
            m.set_field(&field, value);
        }
        m
    }

    fn random_value(kind: &Kind, rng: &mut Rng, depth: usize) -> Option<Value> {
        let text = ["", "plain", "quote \" and \\ and \u{1}", "юникод ✓", "a\nb"];
        Some(match kind {
            Kind::Bool => Value::Bool(rng.below(2) == 1),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(rng.next() as i32),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(rng.next() as i64),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(rng.next() as u32),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(rng.next()),
            Kind::Float => {
                Value::F32([0.5, -1.25e10, f32::NAN, f32::INFINITY][rng.below(4) as usize])
            }
            Kind::Double => {
                Value::F64([0.1, -3.0, f64::NEG_INFINITY, 1e300][rng.below(4) as usize])
            }
            Kind::String => Value::String(text[rng.below(5) as usize].to_owned()),
            Kind::Bytes => Value::Bytes(vec![0u8, 255, 7][..rng.below(4) as usize].to_vec().into()),
            Kind::Enum(e) => Value::EnumNumber(rng.below(e.values().len() as u64 + 1) as i32),
            Kind::Message(m) if depth < 4 => Value::Message(random_message(m, rng, depth + 1)),
            Kind::Message(_) => return None,
        })
    }

    #[test]
    fn every_answer_of_the_contracts_is_written_as_prost_reflect_writes_it() {
        let pool = DescriptorPool::decode(skillup_proto::TESTING_FILE_DESCRIPTOR_SET).unwrap();
        let mut rng = Rng(42);
        let mut checked = 0;
        for service in pool.services().filter(|s| s.full_name().starts_with("skillup.")) {
            // An `HttpBody` is answered as its bytes, never as JSON.
            for method in
                service.methods().filter(|m| m.output().full_name() != "google.api.HttpBody")
            {
                let desc = method.output();
                for _ in 0..50 {
                    let m = random_message(&desc, &mut rng, 0);
                    let (a, b) = (ours(&m), theirs(&m));
                    if a != b {
                        // Maps come out in hash order: equal as values then.
                        let va: serde_json::Value = serde_json::from_str(&a).unwrap();
                        let vb: serde_json::Value = serde_json::from_str(&b).unwrap();
                        assert_eq!(va, vb, "{}", desc.full_name());
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }
}
