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

/// Whether output to a stream may carry ANSI colours: only when it is a
/// terminal (`is_terminal`) and `NO_COLOR` (<https://no-color.org>) is unset
/// or empty in `env`. Log files, pipes and CI transcripts get plain text.
pub fn colours(env: &dyn ConfigSource, is_terminal: bool) -> bool {
    is_terminal && env.non_empty("NO_COLOR").is_none()
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
    fn colours_only_on_a_terminal_without_no_color() {
        let none: BTreeMap<String, String> = BTreeMap::new();
        let set: BTreeMap<&str, &str> = [("NO_COLOR", "1")].into();
        let blank: BTreeMap<&str, &str> = [("NO_COLOR", "")].into();
        assert!(colours(&none, true));
        assert!(colours(&blank, true), "an empty NO_COLOR is unset");
        assert!(!colours(&set, true));
        assert!(!colours(&none, false), "a file or a pipe: never");
    }

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
