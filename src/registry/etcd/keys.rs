//! The key schema: `{prefix}/services/{name}/{id}` → JSON of the instance.
//!
//! Pure functions, no I/O, so the schema is tested without an etcd.

use crate::instance::{InstanceId, ServiceInstance, system_now, unix_ms};

/// The key schema of one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `{prefix}/services/`, the range every registry on the prefix watches.
    services: String,
}

/// Why a value under the prefix was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub(crate) key: String,
    pub(crate) reason: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        let prefix = prefix.trim_end_matches('/');
        Self {
            services: format!("{prefix}/services/"),
        }
    }

    /// The range to read and watch.
    pub(crate) fn services(&self) -> &str {
        &self.services
    }

    /// The key of an instance.
    pub(crate) fn key(&self, instance: &ServiceInstance) -> String {
        format!("{}{}/{}", self.services, instance.name(), instance.id())
    }

    /// `(name, id)` from a key under the prefix.
    pub(crate) fn parse_key<'k>(&self, key: &'k str) -> Result<(&'k str, InstanceId), String> {
        let rest = key
            .strip_prefix(self.services.as_str())
            .ok_or_else(|| format!("key is not under {}", self.services))?;
        let (name, id) = rest
            .split_once('/')
            .ok_or_else(|| "key is not {prefix}/services/{name}/{id}".to_owned())?;
        if name.is_empty() {
            return Err("empty service name in key".to_owned());
        }
        let id = InstanceId::new(id).map_err(|e| format!("bad instance id in key: {e}"))?;
        Ok((name, id))
    }

    /// Decodes a key and its value into an instance.
    ///
    /// The value is the JSON form of [`ServiceInstance`]; `id`, `name` and
    /// `registered_at_ms` may be left out (they are taken from the key and
    /// the clock), so `etcdctl put` needs only `host` and `port`. When they
    /// are present they must agree with the key.
    pub(crate) fn decode(&self, key: &[u8], value: &[u8]) -> Result<ServiceInstance, Malformed> {
        let key_str = String::from_utf8_lossy(key);
        let fail = |reason: String| Malformed {
            key: key_str.clone().into_owned(),
            reason,
        };
        let key = std::str::from_utf8(key).map_err(|_| fail("key is not UTF-8".to_owned()))?;
        let (name, id) = self.parse_key(key).map_err(&fail)?;
        let mut json: serde_json::Value =
            serde_json::from_slice(value).map_err(|e| fail(format!("value is not JSON: {e}")))?;
        let object = json
            .as_object_mut()
            .ok_or_else(|| fail("value is not a JSON object".to_owned()))?;
        let check = |field: &str, expected: &str| match object.get(field) {
            None => Ok(()),
            Some(serde_json::Value::String(s)) if s == expected => Ok(()),
            Some(other) => Err(fail(format!(
                "`{field}` is {other} but the key says {expected:?}"
            ))),
        };
        check("id", id.as_str())?;
        check("name", name)?;
        object
            .entry("id")
            .or_insert_with(|| id.as_str().to_owned().into());
        object
            .entry("name")
            .or_insert_with(|| name.to_owned().into());
        object
            .entry("registered_at_ms")
            .or_insert_with(|| unix_ms(system_now()).into());
        serde_json::from_value(json).map_err(|e| fail(format!("invalid instance: {e}")))
    }

    /// The value stored for an instance.
    pub(crate) fn encode(instance: &ServiceInstance) -> Vec<u8> {
        // Serializing a `ServiceInstance` cannot fail: its metadata is
        // already a `serde_json::Value` with string keys.
        serde_json::to_vec(instance).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceDefinition;

    fn keys() -> Keys {
        Keys::new("/fluxor/")
    }

    #[test]
    fn round_trip() {
        let keys = keys();
        let def = ServiceDefinition::new("orders", "127.0.0.1", 8080)
            .id(InstanceId::new("orders-1").expect("id"))
            .tag("a")
            .metadata("zone", "b");
        let json = serde_json::to_vec(&def).expect("json");
        let instance = keys
            .decode(b"/fluxor/services/orders/orders-1", &json)
            .expect("decode");
        assert_eq!(keys.key(&instance), "/fluxor/services/orders/orders-1");
        let again = keys
            .decode(keys.key(&instance).as_bytes(), &Keys::encode(&instance))
            .expect("decode");
        assert_eq!(again, instance);
        assert_eq!(again.metadata()["zone"], "b");
    }

    #[test]
    fn minimal_value_takes_id_and_name_from_the_key() {
        let instance = keys()
            .decode(
                b"/fluxor/services/web/web-7",
                br#"{"host":"127.0.0.1","port":9000}"#,
            )
            .expect("decode");
        assert_eq!(instance.id().as_str(), "web-7");
        assert_eq!(instance.name(), "web");
        assert_eq!(instance.port(), 9000);
    }

    #[test]
    fn malformed_values_say_why() {
        let keys = keys();
        let cases: [(&[u8], &[u8], &str); 6] = [
            (b"/fluxor/services/web/w1", b"not json", "not JSON"),
            (b"/fluxor/services/web/w1", b"[1]", "not a JSON object"),
            (
                b"/fluxor/services/web/w1",
                br#"{"host":"h"}"#,
                "invalid instance",
            ),
            (
                b"/fluxor/services/web/w1",
                br#"{"host":"h","port":1,"id":"w2"}"#,
                "the key says",
            ),
            (
                b"/fluxor/services/web",
                br#"{"host":"h","port":1}"#,
                "{name}/{id}",
            ),
            (
                b"/fluxor/services/web/w1",
                br#"{"host":"h","port":0}"#,
                "invalid instance",
            ),
        ];
        for (key, value, why) in cases {
            let err = keys.decode(key, value).expect_err("malformed");
            assert!(err.reason.contains(why), "{err:?} should mention {why}");
        }
    }
}
