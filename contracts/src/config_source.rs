//! Where configuration values come from: the process environment in
//! production, a map in tests (no test mutates the process environment).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};

/// A source of configuration values keyed by variable name.
pub trait ConfigSource {
    /// The raw value of `key`, if set (an empty string if set to nothing).
    fn get(&self, key: &str) -> Option<String>;

    /// The value of `key` unless it is unset or empty: an empty variable
    /// counts as unset.
    fn non_empty(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.is_empty())
    }
}

/// The real process environment. A value that is not valid UTF-8 counts as
/// unset.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl ConfigSource for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl<K, V, S> ConfigSource for HashMap<K, V, S>
where
    K: Borrow<str> + Hash + Eq,
    V: AsRef<str>,
    S: BuildHasher,
{
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).map(|v| v.as_ref().to_string())
    }
}

impl<K, V> ConfigSource for BTreeMap<K, V>
where
    K: Borrow<str> + Ord,
    V: AsRef<str>,
{
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key).map(|v| v.as_ref().to_string())
    }
}

impl<T: ConfigSource + ?Sized> ConfigSource for &T {
    fn get(&self, key: &str) -> Option<String> {
        (**self).get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_of_owned_and_borrowed_strings_are_sources() {
        let a: HashMap<&str, &str> = [("A", "1"), ("E", "")].into();
        let b: HashMap<String, String> = [("A".to_string(), "1".to_string())].into();
        let c: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        for src in [&a as &dyn ConfigSource, &b, &c] {
            assert_eq!(src.get("A").as_deref(), Some("1"));
            assert_eq!(src.get("B"), None);
        }
        assert_eq!(
            ConfigSource::get(&a, "E").as_deref(),
            Some(""),
            "set to nothing is set"
        );
        assert_eq!(a.non_empty("E"), None, "unless asked otherwise");
    }

    #[test]
    fn the_process_environment_is_a_source() {
        // PATH is set wherever tests run; reading never mutates anything.
        assert_eq!(
            ProcessEnv.get("PATH"),
            std::env::var("PATH").ok(),
            "ProcessEnv reads std::env"
        );
        assert_eq!(ProcessEnv.get("ZT_CONTRACTS_SURELY_UNSET_VARIABLE"), None);
    }
}
