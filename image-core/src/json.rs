//! Canonical JSON: the same value always serialises to the same bytes.
//!
//! Object keys are written in byte order at every depth, with no
//! whitespace, whatever map type the value used (oci-spec keeps labels and
//! annotations in a `HashMap`, whose order changes between processes) and
//! whether or not some other crate turned on serde_json's `preserve_order`.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;

/// Serialises `value` canonically: sorted keys, no insignificant whitespace.
///
/// # Errors
/// Whatever `serde_json` reports for a value it cannot represent (a map
/// with non-string keys, a float that is not finite).
pub fn to_canonical_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, &v).map_err(serde_json::Error::io)?;
    Ok(out)
}

/// Writes a JSON value canonically to `out`.
///
/// # Errors
/// Errors of the writer.
pub fn write_canonical<W: Write>(out: &mut W, v: &Value) -> io::Result<()> {
    write_value(out, v)
}

fn write_value<W: Write>(out: &mut W, v: &Value) -> io::Result<()> {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.write_all(b"{")?;
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, k)?;
                out.write_all(b":")?;
                if let Some(child) = map.get(k) {
                    write_value(out, child)?;
                }
            }
            out.write_all(b"}")
        }
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_value(out, item)?;
            }
            out.write_all(b"]")
        }
        scalar => serde_json::to_writer(&mut *out, scalar).map_err(io::Error::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keys_are_sorted_at_every_depth() {
        let mut labels = HashMap::new();
        for k in ["zeta", "alpha", "mid", "Beta", "a.b"] {
            labels.insert(k.to_string(), format!("v-{k}"));
        }
        let v = serde_json::json!({"b": 1, "a": {"y": [3, {"d": null, "c": true}], "x": "é\n"}, "l": labels});
        let out = String::from_utf8(to_canonical_vec(&v).expect("ok")).expect("utf8");
        assert_eq!(
            out,
            r#"{"a":{"x":"é\n","y":[3,{"c":true,"d":null}]},"b":1,"l":{"Beta":"v-Beta","a.b":"v-a.b","alpha":"v-alpha","mid":"v-mid","zeta":"v-zeta"}}"#
        );
    }
}
