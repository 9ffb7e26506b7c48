//! The lineage index: every entry by the digests and names of its inputs and by the models it
//! produced, so that "which models came from X" is a few hash lookups per model on the path,
//! transitively through base models, however many runs are recorded (docs/benchmarks.md,
//! "Lineage").

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hasher};

use serde::{Deserialize, Serialize};

use super::entry::{Fact, Kind, LineageEntry, ModelRef, RunRef, pinned_digest};

/// Longest chain of base models followed upstream: deeper means a cycle of statements (a model
/// cannot be its own ancestor) or forged lineage; either way the answer stops there.
pub const MAX_DEPTH: usize = 64;

/// What a question names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A dataset by `sha256:` digest or by name.
    Dataset(String),
    /// An image by `sha256:` digest, by a reference pinned by digest, or by the reference as
    /// the spec wrote it.
    Image(String),
    /// A base model (any model) by `sha256:` digest: the models trained from it.
    BaseModel(String),
    /// A source commit.
    Code(String),
}

/// One run on the way from a material to a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub run: RunRef,
    /// The input through which this run depends on what came before: the material asked about
    /// (first step), then the base model (each later step).
    pub via: Fact,
    /// The model this run produced.
    pub model: ModelRef,
}

/// A model that depends on what was asked about, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hit {
    pub model: ModelRef,
    /// From the material to `model`, one step per run; empty when `model` is the material
    /// itself (a revoked model).
    pub path: Vec<Step>,
}

impl Hit {
    /// Trained from the material directly (one run), not through a base model.
    pub fn direct(&self) -> bool {
        self.path.len() <= 1
    }
}

/// What went into a model, recursively through its base model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    pub model: ModelRef,
    pub run: RunRef,
    pub build_type: String,
    pub builder_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_on: Option<String>,
    pub materials: Vec<Fact>,
    /// The base model's own lineage, when provenant recorded the run that produced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<Box<Upstream>>,
}

/// Entry number and fact number within it.
type At = (u32, u32);

/// The maps are keyed by a 64-bit hash of the digest or name rather than by the string: no
/// copy of every digest (a million at 100,000 runs), which made building the index a third of
/// `provenant lineage`'s time (docs/benchmarks.md, "Lineage at scale"). Every lookup compares
/// the strings of what it found, so a collision costs a comparison, never a wrong answer.
type ByKey<V> = HashMap<u64, V, BuildHasherDefault<Prehashed>>;

/// The hasher of a key that already is a hash.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed (write_u64); fold anything else all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn key(kind: Option<Kind>, text: &str) -> u64 {
    let mut h = BuildHasherDefault::<DefaultHasher>::default().build_hasher();
    if let Some(kind) = kind {
        h.write_u8(kind as u8);
    }
    h.write(text.as_bytes());
    h.finish()
}

/// Every recorded run, indexed.
#[derive(Debug, Default)]
pub struct LineageIndex {
    entries: Vec<LineageEntry>,
    /// Material digest → the facts with it.
    by_digest: ByKey<Vec<At>>,
    /// (kind, name) → the facts with it.
    by_name: ByKey<Vec<At>>,
    /// Model digest → the entries that produced it.
    producers: ByKey<Vec<u32>>,
}

impl LineageIndex {
    pub fn new(entries: impl IntoIterator<Item = LineageEntry>) -> Self {
        let entries = entries.into_iter();
        let mut index = LineageIndex::default();
        index.entries.reserve(entries.size_hint().0);
        for entry in entries {
            index.insert(entry);
        }
        index
    }

    /// Add one run. An entry for the same invocation and envelope is not added twice (the same
    /// statement found in two places).
    pub fn insert(&mut self, entry: LineageEntry) {
        let duplicate = entry
            .models
            .first()
            .and_then(|m| self.producers.get(&key(None, &m.digest)))
            .is_some_and(|ids| {
                ids.iter().any(|&i| {
                    let e = &self.entries[i as usize];
                    e.run.invocation_id == entry.run.invocation_id
                        && e.envelope_digest == entry.envelope_digest
                })
            });
        if duplicate {
            return;
        }
        let id = u32::try_from(self.entries.len()).expect("fewer than 4 billion runs");
        for (n, fact) in entry.materials.iter().enumerate() {
            let at = (id, n as u32);
            if let Some(digest) = &fact.digest {
                self.by_digest
                    .entry(key(None, digest))
                    .or_default()
                    .push(at);
            }
            if !fact.name.is_empty() {
                self.by_name
                    .entry(key(Some(fact.kind), &fact.name))
                    .or_default()
                    .push(at);
            }
        }
        for model in &entry.models {
            let ids = self.producers.entry(key(None, &model.digest)).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        self.entries.push(entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[LineageEntry] {
        &self.entries
    }

    fn fact(&self, (entry, fact): At) -> (&LineageEntry, &Fact) {
        let e = &self.entries[entry as usize];
        (e, &e.materials[fact as usize])
    }

    /// The facts a query names directly.
    fn direct(&self, query: &Query) -> Vec<At> {
        let (kind, name) = match query {
            Query::Dataset(k) => (Kind::Dataset, k),
            Query::Image(k) => (Kind::Image, k),
            Query::BaseModel(k) => (Kind::BaseModel, k),
            Query::Code(k) => (Kind::Code, k),
        };
        let digest = if name.starts_with("sha256:") || kind == Kind::Code {
            Some(name.to_ascii_lowercase())
        } else if kind == Kind::Image {
            pinned_digest(name)
        } else {
            None
        };
        let found = match &digest {
            Some(d) => self.by_digest.get(&key(None, d)),
            None => self.by_name.get(&self::key(Some(kind), name)),
        };
        found
            .into_iter()
            .flatten()
            .copied()
            .filter(|&at| {
                let fact = self.fact(at).1;
                fact.kind == kind
                    && match &digest {
                        Some(d) => fact.digest.as_ref() == Some(d),
                        None => &fact.name == name,
                    }
            })
            .collect()
    }

    /// Every model that depends on what `query` names: trained on it directly and, with
    /// `transitive`, every model trained from those through base models. One hit per model,
    /// with the shortest path; sorted by path length, then model.
    pub fn find(&self, query: &Query, transitive: bool) -> Vec<Hit> {
        let mut seen: HashSet<&ModelRef> = HashSet::new();
        let mut queue: VecDeque<Hit> = VecDeque::new();
        let mut hits = Vec::new();
        for at in self.direct(query) {
            let (entry, fact) = self.fact(at);
            for model in &entry.models {
                if seen.insert(model) {
                    queue.push_back(Hit {
                        model: model.clone(),
                        path: vec![step(entry, fact, model)],
                    });
                }
            }
        }
        while let Some(hit) = queue.pop_front() {
            if transitive && hit.path.len() < MAX_DEPTH {
                self.children(&hit, &mut seen, &mut queue);
            }
            hits.push(hit);
        }
        hits.sort_by(|a, b| (a.path.len(), &a.model).cmp(&(b.path.len(), &b.model)));
        hits
    }

    /// The models trained from `hit.model` as their base model, one step further.
    fn children<'a>(
        &'a self,
        hit: &Hit,
        seen: &mut HashSet<&'a ModelRef>,
        queue: &mut VecDeque<Hit>,
    ) {
        for &at in self
            .by_digest
            .get(&key(None, &hit.model.digest))
            .into_iter()
            .flatten()
        {
            let (entry, fact) = self.fact(at);
            if fact.kind != Kind::BaseModel || fact.digest.as_ref() != Some(&hit.model.digest) {
                continue;
            }
            for model in &entry.models {
                if seen.insert(model) {
                    let mut path = hit.path.clone();
                    path.push(step(entry, fact, model));
                    queue.push_back(Hit {
                        model: model.clone(),
                        path,
                    });
                }
            }
        }
    }

    /// Every model trained from the model `digest`, directly or through base models.
    pub fn descendants(&self, digest: &str) -> Vec<Hit> {
        self.find(&Query::BaseModel(digest.to_string()), true)
    }

    /// What a revocation of the model `digest` reaches: the model itself (each repository
    /// provenant recorded it in, with an empty path) and all its descendants.
    pub fn model_and_descendants(&self, digest: &str) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self
            .producers
            .get(&key(None, digest))
            .into_iter()
            .flatten()
            .flat_map(|&i| self.entries[i as usize].models.iter())
            .filter(|m| m.digest == digest)
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|m| Hit {
                model: m.clone(),
                path: Vec::new(),
            })
            .collect();
        hits.sort_by(|a, b| a.model.cmp(&b.model));
        let own: HashSet<ModelRef> = hits.iter().map(|h| h.model.clone()).collect();
        hits.extend(
            self.descendants(digest)
                .into_iter()
                .filter(|h| !own.contains(&h.model)),
        );
        hits
    }

    /// What went into the model `digest`, recursively through base models provenant recorded.
    /// None when no recorded run produced it.
    pub fn upstream(&self, digest: &str) -> Option<Upstream> {
        self.upstream_at(digest, &mut HashSet::new())
    }

    fn upstream_at(&self, digest: &str, visited: &mut HashSet<String>) -> Option<Upstream> {
        if visited.len() >= MAX_DEPTH || !visited.insert(digest.to_string()) {
            return None;
        }
        // The latest-finishing run when several recorded the same model (RFC 3339 UTC sorts).
        let entry = self
            .producers
            .get(&key(None, digest))?
            .iter()
            .map(|&i| &self.entries[i as usize])
            .filter(|e| e.models.iter().any(|m| m.digest == digest))
            .max_by(|a, b| a.finished_on.cmp(&b.finished_on))?;
        let model = entry.models.iter().find(|m| m.digest == digest)?.clone();
        let base = entry
            .facts(Kind::BaseModel)
            .find_map(|f| f.digest.as_deref())
            .and_then(|d| self.upstream_at(d, visited))
            .map(Box::new);
        Some(Upstream {
            model,
            run: entry.run.clone(),
            build_type: entry.build_type.clone(),
            builder_id: entry.builder_id.clone(),
            finished_on: entry.finished_on.clone(),
            materials: entry.materials.clone(),
            base,
        })
    }
}

fn step(entry: &LineageEntry, fact: &Fact, model: &ModelRef) -> Step {
    Step {
        run: entry.run.clone(),
        via: fact.clone(),
        model: model.clone(),
    }
}
