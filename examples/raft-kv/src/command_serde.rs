//! The hand-written `Deserialize` of [`KvCommand`].
//!
//! The encoding is unchanged: what serde's derive writes for an internally tagged enum (`#[serde(tag
//! = "op")]`), a map with an `op` entry and the variant's fields (or, in encodings that write structs
//! as arrays, `[op, fields...]` in declaration order). So entries in existing logs, and commands
//! exchanged with nodes of the previous version, decode as before.
//!
//! What changes is the decoding: serde's derive for internally tagged enums cannot know the variant
//! before it has read the tag, so it buffers the whole map into its private `Content` tree first
//! (allocating every key and value), then decodes the variant from that. Here every field has one
//! type whatever the variant (`key` is always a string, `client_id` always a number, ...), so each
//! field is decoded straight into its slot, in any order, and the variant is chosen at the end.
//! Field names are matched as borrowed strings, without allocation.
//!
//! Like the derive, unknown fields (and fields of another variant) are skipped, an `expected` that
//! is absent means `None`, a missing required field or a duplicate field is an error.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::command::KvCommand;

/// The values of `op`, as serialized.
const OPS: &[&str] = &["put", "get", "delete", "compare_and_swap", "session"];

/// Every field name any variant has, for error messages.
const FIELDS: &[&str] = &[
    "op",
    "key",
    "value",
    "expected",
    "new",
    "client_id",
    "seq",
    "timestamp_ms",
    "command",
];

/// The variant a command's `op` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    Delete,
    CompareAndSwap,
    Session,
}

impl Op {
    fn from_name<E: de::Error>(name: &[u8]) -> Result<Op, E> {
        Ok(match name {
            b"put" => Op::Put,
            b"get" => Op::Get,
            b"delete" => Op::Delete,
            b"compare_and_swap" => Op::CompareAndSwap,
            b"session" => Op::Session,
            other => return Err(E::unknown_variant(&String::from_utf8_lossy(other), OPS)),
        })
    }
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Op, D::Error> {
        struct OpVisitor;
        impl Visitor<'_> for OpVisitor {
            type Value = Op;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command name (op)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Op, E> {
                Op::from_name(v.as_bytes())
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Op, E> {
                Op::from_name(v)
            }
        }
        deserializer.deserialize_str(OpVisitor)
    }
}

/// A field name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Op,
    Key,
    Value,
    Expected,
    New,
    ClientId,
    Seq,
    TimestampMs,
    Command,
    /// A name no variant has: its value is skipped.
    Other,
}

impl Field {
    fn from_name(name: &[u8]) -> Field {
        match name {
            b"op" => Field::Op,
            b"key" => Field::Key,
            b"value" => Field::Value,
            b"expected" => Field::Expected,
            b"new" => Field::New,
            b"client_id" => Field::ClientId,
            b"seq" => Field::Seq,
            b"timestamp_ms" => Field::TimestampMs,
            b"command" => Field::Command,
            _ => Field::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Field, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field::from_name(v.as_bytes()))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Field, E> {
                Ok(Field::from_name(v))
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

/// The fields read so far, whatever the variant.
#[derive(Default)]
struct Slots {
    op: Option<Op>,
    key: Option<String>,
    value: Option<String>,
    expected: Option<Option<String>>,
    new: Option<String>,
    client_id: Option<u64>,
    seq: Option<u64>,
    timestamp_ms: Option<u64>,
    command: Option<Box<KvCommand>>,
}

/// Stores `value` in `slot`, refusing a second value for the same field.
fn fill<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

/// `slot`'s value, or the error that `name` is missing.
fn required<T, E: de::Error>(slot: Option<T>, name: &'static str) -> Result<T, E> {
    slot.ok_or_else(|| E::missing_field(name))
}

impl Slots {
    /// The command the fields describe; fields the variant does not have are ignored.
    fn into_command<E: de::Error>(self) -> Result<KvCommand, E> {
        Ok(match required(self.op, "op")? {
            Op::Put => KvCommand::Put {
                key: required(self.key, "key")?,
                value: required(self.value, "value")?,
            },
            Op::Get => KvCommand::Get {
                key: required(self.key, "key")?,
            },
            Op::Delete => KvCommand::Delete {
                key: required(self.key, "key")?,
            },
            Op::CompareAndSwap => KvCommand::CompareAndSwap {
                key: required(self.key, "key")?,
                expected: self.expected.flatten(),
                new: required(self.new, "new")?,
            },
            Op::Session => KvCommand::Session {
                client_id: required(self.client_id, "client_id")?,
                seq: required(self.seq, "seq")?,
                timestamp_ms: required(self.timestamp_ms, "timestamp_ms")?,
                command: required(self.command, "command")?,
            },
        })
    }
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = KvCommand;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key-value command: a map with an `op` entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KvCommand, A::Error> {
        let mut s = Slots::default();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Op => fill(&mut s.op, map.next_value()?, "op")?,
                Field::Key => fill(&mut s.key, map.next_value()?, "key")?,
                Field::Value => fill(&mut s.value, map.next_value()?, "value")?,
                Field::Expected => fill(&mut s.expected, map.next_value()?, "expected")?,
                Field::New => fill(&mut s.new, map.next_value()?, "new")?,
                Field::ClientId => fill(&mut s.client_id, map.next_value()?, "client_id")?,
                Field::Seq => fill(&mut s.seq, map.next_value()?, "seq")?,
                Field::TimestampMs => fill(&mut s.timestamp_ms, map.next_value()?, "timestamp_ms")?,
                Field::Command => fill(&mut s.command, map.next_value()?, "command")?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        s.into_command()
    }

    /// `[op, fields...]`, the variant's fields in declaration order: what serde's derive writes
    /// in encodings that serialize structs as arrays.
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<KvCommand, A::Error> {
        let mut e = Elements { seq, read: 0 };
        let command = match e.next::<Op>()? {
            Op::Put => KvCommand::Put {
                key: e.next()?,
                value: e.next()?,
            },
            Op::Get => KvCommand::Get { key: e.next()? },
            Op::Delete => KvCommand::Delete { key: e.next()? },
            Op::CompareAndSwap => KvCommand::CompareAndSwap {
                key: e.next()?,
                expected: e.next()?,
                new: e.next()?,
            },
            Op::Session => KvCommand::Session {
                client_id: e.next()?,
                seq: e.next()?,
                timestamp_ms: e.next()?,
                command: e.next()?,
            },
        };
        if e.seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(
                e.read + 1,
                &"no more elements than the command's fields",
            ));
        }
        Ok(command)
    }
}

/// The elements of a command serialized as an array, read in order.
struct Elements<A> {
    seq: A,
    read: usize,
}

impl<'de, A: SeqAccess<'de>> Elements<A> {
    /// The next element, which must be there.
    fn next<T: Deserialize<'de>>(&mut self) -> Result<T, A::Error> {
        let value = self
            .seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(self.read, &"all of the command's fields"))?;
        self.read += 1;
        Ok(value)
    }
}

impl<'de> Deserialize<'de> for KvCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KvCommand, D::Error> {
        deserializer.deserialize_struct("KvCommand", FIELDS, CommandVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    /// The command type as the previous version declared it: serde's derive for an internally
    /// tagged enum, both ways. What it writes is what existing logs and older nodes hold.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "op", rename_all = "snake_case")]
    enum PreviousKvCommand {
        Put {
            key: String,
            value: String,
        },
        Get {
            key: String,
        },
        Delete {
            key: String,
        },
        CompareAndSwap {
            key: String,
            expected: Option<String>,
            new: String,
        },
        Session {
            client_id: u64,
            seq: u64,
            timestamp_ms: u64,
            command: Box<PreviousKvCommand>,
        },
    }

    fn previous(command: &KvCommand) -> PreviousKvCommand {
        match command.clone() {
            KvCommand::Put { key, value } => PreviousKvCommand::Put { key, value },
            KvCommand::Get { key } => PreviousKvCommand::Get { key },
            KvCommand::Delete { key } => PreviousKvCommand::Delete { key },
            KvCommand::CompareAndSwap { key, expected, new } => {
                PreviousKvCommand::CompareAndSwap { key, expected, new }
            }
            KvCommand::Session {
                client_id,
                seq,
                timestamp_ms,
                command,
            } => PreviousKvCommand::Session {
                client_id,
                seq,
                timestamp_ms,
                command: Box::new(previous(&command)),
            },
        }
    }

    fn samples() -> Vec<KvCommand> {
        let long = "é".repeat(5_000);
        vec![
            KvCommand::put("k", "v"),
            KvCommand::put("", ""),
            KvCommand::put(long.clone(), long.clone()),
            KvCommand::get("k"),
            KvCommand::delete("ключ"),
            KvCommand::compare_and_swap("k", None, "v"),
            KvCommand::compare_and_swap("k", Some("old"), "v"),
            KvCommand::put("k", "v").in_session(u64::MAX, 1, 0),
            KvCommand::compare_and_swap("k", Some(""), long).in_session(1, u64::MAX, u64::MAX),
            KvCommand::delete("k")
                .in_session(3, 4, 5)
                .in_session(6, 7, 8),
        ]
    }

    #[test]
    fn the_encoding_is_the_previous_versions_and_its_bytes_decode() {
        for command in samples() {
            let old = previous(&command);
            // MessagePack with field names (transports, file logs), as arrays, and JSON.
            let named = rmp_serde::to_vec_named(&old).unwrap();
            assert_eq!(rmp_serde::to_vec_named(&command).unwrap(), named);
            assert_eq!(rmp_serde::from_slice::<KvCommand>(&named).unwrap(), command);
            let compact = rmp_serde::to_vec(&old).unwrap();
            assert_eq!(
                rmp_serde::from_slice::<KvCommand>(&compact).unwrap(),
                command
            );
            let json = serde_json::to_string(&old).unwrap();
            assert_eq!(serde_json::to_string(&command).unwrap(), json);
            assert_eq!(serde_json::from_str::<KvCommand>(&json).unwrap(), command);
            // And the previous decoder reads what this version writes (mixed versions).
            let new = rmp_serde::to_vec_named(&command).unwrap();
            assert_eq!(
                rmp_serde::from_slice::<PreviousKvCommand>(&new).unwrap(),
                old
            );
        }
    }

    #[test]
    fn fixed_bytes_of_the_previous_version_decode() {
        // {"op":"put","key":"k","value":"v"} as `rmp_serde::to_vec_named` wrote it.
        let put = [
            0x83, 0xa2, b'o', b'p', 0xa3, b'p', b'u', b't', 0xa3, b'k', b'e', b'y', 0xa1, b'k',
            0xa5, b'v', b'a', b'l', b'u', b'e', 0xa1, b'v',
        ];
        assert_eq!(
            rmp_serde::from_slice::<KvCommand>(&put).unwrap(),
            KvCommand::put("k", "v")
        );
        assert_eq!(
            rmp_serde::to_vec_named(&KvCommand::put("k", "v")).unwrap(),
            put
        );
    }

    #[test]
    fn fields_decode_in_any_order_and_unknown_fields_are_skipped() {
        let cases = [
            (
                r#"{"key":"k","value":"v","op":"put"}"#,
                KvCommand::put("k", "v"),
            ),
            (
                r#"{"new":"v","op":"compare_and_swap","key":"k"}"#,
                KvCommand::compare_and_swap("k", None, "v"),
            ),
            (
                r#"{"op":"compare_and_swap","key":"k","expected":null,"new":"v"}"#,
                KvCommand::compare_and_swap("k", None, "v"),
            ),
            (
                r#"{"op":"get","key":"k","extra":[1,{"a":2}],"value":"ignored"}"#,
                KvCommand::get("k"),
            ),
            (
                r#"{"command":{"key":"k","op":"delete"},"seq":2,"op":"session","timestamp_ms":3,"client_id":1}"#,
                KvCommand::delete("k").in_session(1, 2, 3),
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(
                serde_json::from_str::<KvCommand>(json).unwrap(),
                expected,
                "{json}"
            );
        }
    }

    #[test]
    fn malformed_commands_are_refused() {
        for (json, expected) in [
            (r#"{"key":"k","value":"v"}"#, "missing field `op`"),
            (r#"{"op":"put","key":"k"}"#, "missing field `value`"),
            (r#"{"op":"erase","key":"k"}"#, "unknown variant `erase`"),
            (
                r#"{"op":"put","key":"k","key":"j","value":"v"}"#,
                "duplicate field `key`",
            ),
            (
                r#"{"op":"put","op":"get","key":"k","value":"v"}"#,
                "duplicate field `op`",
            ),
            (r#"{"op":"get","key":7}"#, "invalid type"),
            (
                r#"{"op":"session","client_id":1,"seq":1,"timestamp_ms":1}"#,
                "missing field `command`",
            ),
            (r#"["put","k"]"#, "invalid length 2"),
            (r#"["get","k","extra"]"#, "invalid length 3"),
            (r#""put""#, "invalid type"),
        ] {
            let err = serde_json::from_str::<KvCommand>(json).expect_err(json);
            assert!(err.to_string().contains(expected), "{json}: {err}");
        }
        // Bytes that are not UTF-8 in a key.
        let mut bad = rmp_serde::to_vec_named(&KvCommand::get("k")).unwrap();
        let last = bad.len() - 1;
        bad[last] = 0xff;
        assert!(rmp_serde::from_slice::<KvCommand>(&bad).is_err());
    }
}
