//! Every plugin type this build knows, one line each (after llm-d's `pkg/plugins/register.go`): its
//! name, its kind, its parameters type and a factory. The configuration loader builds profiles from
//! this table only, so a type that is listed can be built and a type that is not is a configuration
//! error naming the field. `plugin/CONFIG.md`'s plugin table is checked against it by a test, and the
//! decision view lists it.

use super::filters::Filter;
use super::filters::saturation::SaturationFilter;
use super::pickers::Picker;
use super::pickers::max_score::MaxScorePicker;
use super::pickers::random::RandomPicker;
use super::pickers::weighted_random::WeightedRandomPicker;
use super::scorers::Scorer;
use super::scorers::active_request::ActiveRequestScorer;
use super::scorers::kv_cache::KvCacheScorer;
use super::scorers::load_aware::LoadAwareScorer;
use super::scorers::lora_affinity::LoraAffinityScorer;
use super::scorers::prefix_cache::{PrefixCacheParams, PrefixCacheScorer};
use super::scorers::queue::QueueScorer;
use super::scorers::session_affinity::{SessionAffinityParams, SessionAffinityScorer};
use crate::config::{ConfigError, parse_parameters};
use serde::Serialize;
use serde_json::Value;

/// Where a plugin sits in a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Filter,
    Scorer,
    Picker,
    /// llm-d's profile handlers: accepted so an llm-d configuration carries over; a single-profile,
    /// in-proxy picker has nothing for them to do.
    ProfileHandler,
}

/// What a factory builds.
pub enum Built {
    Filter(Box<dyn Filter>),
    Scorer(Box<dyn Scorer>),
    Picker(Box<dyn Picker>),
    ProfileHandler,
}

/// A factory: the plugin's `parameters` and their path in the configuration (for errors).
pub type Factory = fn(&Value, &str) -> Result<Built, ConfigError>;

/// One plugin type.
#[derive(Clone, Copy, Serialize)]
pub struct PluginType {
    pub name: &'static str,
    pub kind: Kind,
    /// The Rust type of its parameters (`—` for none); its fields are documented in `CONFIG.md`.
    pub parameters: &'static str,
    #[serde(skip)]
    pub build: Factory,
}

fn scorer(s: impl Scorer + 'static) -> Result<Built, ConfigError> {
    Ok(Built::Scorer(Box::new(s)))
}

pub const REGISTRY: &[PluginType] = &[
    PluginType {
        name: "saturation-filter",
        kind: Kind::Filter,
        parameters: "SaturationParams",
        build: |p, path| Ok(Built::Filter(Box::new(SaturationFilter { params: parse_parameters(p, path)? }))),
    },
    PluginType { name: "queue-scorer", kind: Kind::Scorer, parameters: "—", build: |_, _| scorer(QueueScorer) },
    PluginType {
        name: "kv-cache-utilization-scorer",
        kind: Kind::Scorer,
        parameters: "—",
        build: |_, _| scorer(KvCacheScorer),
    },
    PluginType {
        name: "prefix-cache-scorer",
        kind: Kind::Scorer,
        parameters: "PrefixCacheParams",
        build: |p, path| scorer(PrefixCacheScorer::new(parse_parameters::<PrefixCacheParams>(p, path)?)),
    },
    PluginType {
        name: "lora-affinity-scorer",
        kind: Kind::Scorer,
        parameters: "—",
        build: |_, _| scorer(LoraAffinityScorer),
    },
    PluginType {
        name: "active-request-scorer",
        kind: Kind::Scorer,
        parameters: "—",
        build: |_, _| scorer(ActiveRequestScorer),
    },
    PluginType {
        name: "load-aware-scorer",
        kind: Kind::Scorer,
        parameters: "LoadAwareParams",
        build: |p, path| scorer(LoadAwareScorer::new(parse_parameters(p, path)?)),
    },
    PluginType {
        name: "session-affinity-scorer",
        kind: Kind::Scorer,
        parameters: "SessionAffinityParams",
        build: |p, path| {
            // The key itself is resolved (and required) by the configuration; here only the shape.
            parse_parameters::<SessionAffinityParams>(p, path)?;
            scorer(SessionAffinityScorer)
        },
    },
    PluginType {
        name: "max-score-picker",
        kind: Kind::Picker,
        parameters: "MaxScoreParams",
        build: |p, path| Ok(Built::Picker(Box::new(MaxScorePicker { params: parse_parameters(p, path)? }))),
    },
    PluginType {
        name: "random-picker",
        kind: Kind::Picker,
        parameters: "—",
        build: |_, _| Ok(Built::Picker(Box::new(RandomPicker))),
    },
    PluginType {
        name: "weighted-random-picker",
        kind: Kind::Picker,
        parameters: "—",
        build: |_, _| Ok(Built::Picker(Box::new(WeightedRandomPicker))),
    },
    PluginType {
        name: "single-profile-handler",
        kind: Kind::ProfileHandler,
        parameters: "—",
        build: |_, _| Ok(Built::ProfileHandler),
    },
];

/// The registered type called `name`.
pub fn lookup(name: &str) -> Option<&'static PluginType> {
    REGISTRY.iter().find(|t| t.name == name)
}

/// Every registered name, sorted, for error messages.
pub fn names() -> String {
    let mut all: Vec<&str> = REGISTRY.iter().map(|t| t.name).collect();
    all.sort_unstable();
    all.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_type_builds_with_default_parameters_as_its_kind() {
        for t in REGISTRY {
            let built = match (t.build)(&Value::Null, "p") {
                Ok(built) => built,
                Err(e) => panic!("{} does not build with defaults: {e}", t.name),
            };
            let kind = match built {
                Built::Filter(_) => Kind::Filter,
                Built::Scorer(_) => Kind::Scorer,
                Built::Picker(_) => Kind::Picker,
                Built::ProfileHandler => Kind::ProfileHandler,
            };
            assert_eq!(kind, t.kind, "{}", t.name);
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = REGISTRY.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
    }

    #[test]
    fn config_md_documents_exactly_the_registered_types() {
        let doc = include_str!("../../CONFIG.md");
        let table: Vec<(&str, &str)> = doc
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let kind = *cells.get(2)?;
                (["filter", "scorer", "picker", "profile-handler"].contains(&kind)).then_some((name, kind))
            })
            .collect();
        let mut documented: Vec<(String, String)> = table.iter().map(|(n, k)| (n.to_string(), k.to_string())).collect();
        documented.sort();
        let mut registered: Vec<(String, String)> = REGISTRY
            .iter()
            .map(|t| {
                (
                    t.name.to_string(),
                    serde_json::to_value(t.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                )
            })
            .collect();
        registered.sort();
        assert_eq!(documented, registered, "CONFIG.md's plugin table and the registry disagree");
    }
}
