//! Skill dependency resolution.
//!
//! Several versions of one skill may be installed side by side. [`resolve`]
//! decides, for every installed `(name, version)` node, which installed node
//! each of its dependencies binds to, and which nodes cannot be loaded and why.
//! Everything here is a pure function of its input: no I/O, no global state,
//! and the same installed set always yields the same [`Resolution`],
//! whatever order it was given in (apart from which copy of a duplicate is
//! kept, see below).
//!
//! # Rules
//!
//! * Every dependency edge binds to the **highest** installed version of the
//!   dependency's name that satisfies its [`VersionReq`] (pre-releases match
//!   only as [`VersionReq::matches`] says). Binding is per node, so dependents
//!   with compatible requirements share one version while incompatible majors
//!   are loaded side by side.
//! * A node is resolved only when every dependency binds and every node it
//!   binds to is resolved. Otherwise it fails with exactly one
//!   [`ResolveError`], the first of these that applies:
//!   1. [`ResolveError::Missing`] / [`ResolveError::Unsatisfiable`] for the
//!      first dependency (in name order) that does not bind — these are about
//!      the node's own manifest, so they are the most direct thing to fix;
//!   2. [`ResolveError::Cycle`] when the node lies on a dependency cycle
//!      (including binding to itself); the path is the shortest cycle
//!      through the node, ties broken by dependency name order;
//!   3. [`ResolveError::DependencyFailed`] for the first dependency (in name
//!      order) that is bound to a failed node.
//! * A dependency on the skill's own name is an ordinary edge: `a@2` may bind
//!   to `a@1`. Only binding to the very same node is a cycle (length 1).
//! * Input may name the same `(name, version)` twice. The first occurrence is
//!   kept and resolved; each later one is reported in
//!   [`Resolution::duplicates`] as [`ResolveError::Duplicate`] and otherwise
//!   ignored.
//!
//! # Invariants of a [`Resolution`]
//!
//! * Each kept node is in exactly one of `resolved` and `failed`.
//! * Every dependency of a resolved node is bound to a resolved node.
//! * `load_order` holds exactly the resolved nodes, each once, dependencies
//!   before dependents; among nodes that are ready at the same time the
//!   smallest [`NodeId`] comes first, so the order is deterministic.
//! * Maps are ordered by [`NodeId`]: name, then version ascending by semver
//!   precedence (build metadata breaks ties, so `1.0.0+a` and `1.0.0+b` are
//!   distinct nodes).
//!
//! # Cost
//!
//! Binding, cycle detection (an iterative Tarjan DFS, so arbitrarily deep
//! graphs cannot overflow the stack) and load ordering are near linear.
//! Cycle paths are found by one breadth-first search per node on a cycle,
//! bounded by its strongly connected component; since every node on a cycle
//! gets its own path, a single huge cycle produces output quadratic in its
//! length. A [`ResolveError::DependencyFailed`] nests at most two levels deep
//! no matter how long the failing chain is, which keeps memory linear and
//! `Display`/`Drop` shallow.

use semver::{Version, VersionReq};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt;

/// One installed skill version; displays as `name@version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    /// Skill name.
    pub name: String,
    /// Installed version.
    pub version: Version,
}

impl NodeId {
    /// Builds an id from its parts.
    #[must_use]
    pub fn new(name: impl Into<String>, version: Version) -> Self {
        Self {
            name: name.into(),
            version,
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// An installed skill version as declared by its manifest.
#[derive(Debug, Clone)]
pub struct SkillNode {
    /// Skill name, shared by all its installed versions.
    pub name: String,
    /// This installed version.
    pub version: Version,
    /// Dependency name -> acceptable versions.
    pub dependencies: BTreeMap<String, VersionReq>,
}

impl SkillNode {
    /// The node's `name@version` identity.
    #[must_use]
    pub fn id(&self) -> NodeId {
        NodeId::new(self.name.clone(), self.version.clone())
    }
}

/// Why an installed skill version cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No skill with the dependency's name is installed at all.
    #[error(
        "dependency `{dependency}` is not installed; install a skill named `{dependency}` or remove it from [dependencies]"
    )]
    Missing {
        /// Name of the dependency as written in the manifest.
        dependency: String,
    },

    /// Skills with the dependency's name are installed, but none of their
    /// versions satisfies the requirement. `available` lists every installed
    /// version of that name, highest first.
    #[error(
        "no installed version of `{dependency}` satisfies `{requirement}` (installed: {}); install a matching version or change the requirement",
        join_versions(.available)
    )]
    Unsatisfiable {
        /// Name of the dependency as written in the manifest.
        dependency: String,
        /// The requirement nothing installed satisfies.
        requirement: VersionReq,
        /// Installed versions of `dependency`, highest first.
        available: Vec<Version>,
    },

    /// The node lies on a dependency cycle. `path` holds `name@version`
    /// entries and starts and ends with the failing node, e.g.
    /// `["a@1.0.0", "b@1.0.0", "a@1.0.0"]`; a node bound to itself gives
    /// `["a@1.0.0", "a@1.0.0"]`.
    #[error("dependency cycle: {}; remove one of these dependencies", .path.join(" -> "))]
    Cycle {
        /// `name@version` entries, first and last being the failing node.
        path: Vec<String>,
    },

    /// The node's dependency `dependency` (`name@version`) was bound but
    /// failed itself, so this node cannot load either.
    ///
    /// `reason` is that dependency's own error when the failure started
    /// there. When the dependency only failed because of something further
    /// down, `reason` is a `DependencyFailed` naming the node where the
    /// failure started, with that node's error as its reason; so the chain
    /// is at most two levels deep however long the dependency chain is.
    #[error("dependency `{dependency}` failed to resolve: {reason}")]
    DependencyFailed {
        /// The failed node this one is bound to, as `name@version`.
        dependency: String,
        /// Why it failed (see the variant docs for how deep this nests).
        reason: Box<ResolveError>,
    },

    /// The same `name@version` was given more than once. The first copy is
    /// resolved; this later copy is ignored.
    #[error(
        "skill `{name}@{version}` is installed more than once; the first copy is used and this one is ignored, remove it or give it a different version"
    )]
    Duplicate {
        /// Skill name of the ignored copy.
        name: String,
        /// Version of the ignored copy.
        version: Version,
    },
}

fn join_versions(versions: &[Version]) -> String {
    versions
        .iter()
        .map(Version::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Outcome of [`resolve`]; see the module docs for its invariants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Resolved nodes with their bound dependencies: node -> (dependency
    /// name -> chosen node).
    pub resolved: BTreeMap<NodeId, BTreeMap<String, NodeId>>,
    /// Nodes that cannot be loaded, each with the reason.
    pub failed: BTreeMap<NodeId, ResolveError>,
    /// Resolved nodes, dependencies before dependents.
    pub load_order: Vec<NodeId>,
    /// Later copies of a `(name, version)` already given, in input order,
    /// each with a [`ResolveError::Duplicate`]. Kept apart from `failed`
    /// because their [`NodeId`] equals the kept copy's.
    pub duplicates: Vec<(NodeId, ResolveError)>,
}

/// Resolves every installed skill version; see the module docs for the rules.
#[must_use]
pub fn resolve(nodes: &[SkillNode]) -> Resolution {
    let graph = Graph::build(nodes);
    let count = graph.nodes.len();
    let ids: Vec<NodeId> = graph.nodes.iter().map(|n| n.id()).collect();
    let adj = graph.adjacency();

    let sccs = strongly_connected_components(&adj);
    let mut scc_of = vec![0usize; count];
    for (k, scc) in sccs.iter().enumerate() {
        for &v in scc {
            scc_of[v] = k;
        }
    }

    // `origin` is the node where a failure started, so dependents can name it
    // without nesting one error per hop.
    let mut failure: Vec<Option<(ResolveError, usize)>> = vec![None; count];
    let mut finder = CycleFinder::new(count);

    // Tarjan emits a component only after every component it reaches, so all
    // dependencies outside the current component are already decided.
    for scc in &sccs {
        let cyclic = match scc.as_slice() {
            [single] => adj[*single].contains(single),
            _ => true,
        };
        for &v in scc {
            let local = graph.deps[v].iter().find_map(|(_, b)| match b {
                Binding::Unbound(e) => Some(e),
                Binding::Bound(_) => None,
            });
            let outcome = if let Some(error) = local {
                Some((error.clone(), v))
            } else if cyclic {
                let path = finder.shortest_cycle(v, &adj, &scc_of, &ids);
                Some((ResolveError::Cycle { path }, v))
            } else {
                adj[v].iter().find_map(|&dep| {
                    let (dep_error, origin) = failure[dep].as_ref()?;
                    let reason = if *origin == dep {
                        dep_error.clone()
                    } else {
                        // The origin always failed first; falling back to the
                        // dependency's own error keeps this panic-free.
                        let root = failure[*origin]
                            .as_ref()
                            .map_or_else(|| dep_error.clone(), |(e, _)| e.clone());
                        ResolveError::DependencyFailed {
                            dependency: ids[*origin].to_string(),
                            reason: Box::new(root),
                        }
                    };
                    let error = ResolveError::DependencyFailed {
                        dependency: ids[dep].to_string(),
                        reason: Box::new(reason),
                    };
                    Some((error, *origin))
                })
            };
            failure[v] = outcome;
        }
    }

    let mut resolution = Resolution {
        duplicates: graph.duplicates.clone(),
        ..Resolution::default()
    };
    for (v, outcome) in failure.iter().enumerate() {
        match outcome {
            Some((error, _)) => {
                resolution.failed.insert(ids[v].clone(), error.clone());
            }
            None => {
                let bound = graph.deps[v]
                    .iter()
                    .filter_map(|(name, b)| match b {
                        Binding::Bound(j) => Some(((*name).to_owned(), ids[*j].clone())),
                        Binding::Unbound(_) => None,
                    })
                    .collect();
                resolution.resolved.insert(ids[v].clone(), bound);
            }
        }
    }

    resolution.load_order = load_order(&adj, &failure)
        .into_iter()
        .map(|v| ids[v].clone())
        .collect();
    resolution
}

/// Every node in `resolution` (resolved or failed) that depends, directly or
/// transitively, on any version of `name`, sorted by [`NodeId`].
///
/// Intended for hot reload: when `name` is installed, removed or changed,
/// these are the nodes to re-resolve and reload. A node counts as a direct
/// dependent when its manifest names `name`, whether or not that dependency
/// bound — a node failing with `Missing` for `name` must be retried once it
/// appears. Beyond that, edges follow actual bindings, so `x@1 -> y@1 -> name`
/// does not pull in `x@2` if `x@2` binds a different `y`. A node named `name`
/// is included only when it reaches another version of `name` this way.
///
/// `nodes` must be the slice `resolution` was computed from: resolved nodes'
/// bindings are taken from `resolution`, but failed ones are not recorded
/// there and are recomputed from `nodes`.
#[must_use]
pub fn dependents_closure(resolution: &Resolution, nodes: &[SkillNode], name: &str) -> Vec<NodeId> {
    let graph = Graph::build(nodes);
    let ids: Vec<NodeId> = graph.nodes.iter().map(|n| n.id()).collect();

    let mut dependents: BTreeMap<&NodeId, Vec<&NodeId>> = BTreeMap::new();
    let mut frontier: Vec<&NodeId> = Vec::new();
    for (id, bound) in &resolution.resolved {
        if bound.contains_key(name) {
            frontier.push(id);
        }
        for target in bound.values() {
            dependents.entry(target).or_default().push(id);
        }
    }
    for (v, id) in ids.iter().enumerate() {
        if resolution.resolved.contains_key(id) {
            continue;
        }
        for (dep, binding) in &graph.deps[v] {
            if *dep == name {
                frontier.push(id);
            }
            if let Binding::Bound(j) = binding {
                dependents.entry(&ids[*j]).or_default().push(id);
            }
        }
    }

    let mut seen: BTreeSet<&NodeId> = BTreeSet::new();
    while let Some(id) = frontier.pop() {
        if seen.insert(id)
            && let Some(ds) = dependents.get(id)
        {
            frontier.extend(ds.iter().copied());
        }
    }
    seen.into_iter()
        .filter(|id| resolution.resolved.contains_key(*id) || resolution.failed.contains_key(*id))
        .cloned()
        .collect()
}

enum Binding {
    Bound(usize),
    Unbound(ResolveError),
}

/// Deduplicated nodes sorted by `NodeId`, with every dependency already bound.
struct Graph<'a> {
    nodes: Vec<&'a SkillNode>,
    duplicates: Vec<(NodeId, ResolveError)>,
    /// Per node, in dependency-name order.
    deps: Vec<Vec<(&'a str, Binding)>>,
}

impl<'a> Graph<'a> {
    fn build(input: &'a [SkillNode]) -> Self {
        let mut seen: BTreeSet<(&str, &Version)> = BTreeSet::new();
        let mut nodes = Vec::with_capacity(input.len());
        let mut duplicates = Vec::new();
        for node in input {
            if seen.insert((node.name.as_str(), &node.version)) {
                nodes.push(node);
            } else {
                let error = ResolveError::Duplicate {
                    name: node.name.clone(),
                    version: node.version.clone(),
                };
                duplicates.push((node.id(), error));
            }
        }
        // Sorting makes every index-based choice below independent of input order.
        nodes.sort_by(|a, b| (a.name.as_str(), &a.version).cmp(&(b.name.as_str(), &b.version)));

        let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            by_name.entry(node.name.as_str()).or_default().push(i);
        }
        // Highest first, so the first match is the one to bind.
        for versions in by_name.values_mut() {
            versions.reverse();
        }

        let deps = nodes
            .iter()
            .map(|node| {
                node.dependencies
                    .iter()
                    .map(|(dep, req)| (dep.as_str(), bind(&nodes, &by_name, dep, req)))
                    .collect()
            })
            .collect();
        Graph {
            nodes,
            duplicates,
            deps,
        }
    }

    fn adjacency(&self) -> Vec<Vec<usize>> {
        self.deps
            .iter()
            .map(|deps| {
                deps.iter()
                    .filter_map(|(_, b)| match b {
                        Binding::Bound(j) => Some(*j),
                        Binding::Unbound(_) => None,
                    })
                    .collect()
            })
            .collect()
    }
}

fn bind(
    nodes: &[&SkillNode],
    by_name: &BTreeMap<&str, Vec<usize>>,
    dep: &str,
    req: &VersionReq,
) -> Binding {
    let Some(candidates) = by_name.get(dep) else {
        return Binding::Unbound(ResolveError::Missing {
            dependency: dep.to_owned(),
        });
    };
    match candidates.iter().find(|&&i| req.matches(&nodes[i].version)) {
        Some(&i) => Binding::Bound(i),
        None => Binding::Unbound(ResolveError::Unsatisfiable {
            dependency: dep.to_owned(),
            requirement: req.clone(),
            available: candidates
                .iter()
                .map(|&i| nodes[i].version.clone())
                .collect(),
        }),
    }
}

/// Tarjan's algorithm with an explicit stack, so a 10,000-long chain costs
/// heap, not call stack. Components come out dependencies-first.
fn strongly_connected_components(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let n = adj.len();
    let mut index = vec![UNVISITED; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut call: Vec<(usize, usize)> = Vec::new();
    let mut next_index = 0usize;
    let mut sccs = Vec::new();

    for root in 0..n {
        if index[root] != UNVISITED {
            continue;
        }
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        call.push((root, 0));

        while let Some(frame) = call.last_mut() {
            let (v, edge) = *frame;
            if let Some(&w) = adj[v].get(edge) {
                frame.1 += 1;
                if index[w] == UNVISITED {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            call.pop();
            if let Some(&(parent, _)) = call.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut scc = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                sccs.push(scc);
            }
        }
    }
    sccs
}

/// Breadth-first search for the shortest cycle through a node, reusing its
/// buffers across nodes; `stamp` avoids clearing them between searches.
struct CycleFinder {
    stamp: Vec<usize>,
    parent: Vec<usize>,
    queue: VecDeque<usize>,
}

impl CycleFinder {
    fn new(n: usize) -> Self {
        Self {
            stamp: vec![0; n],
            parent: vec![0; n],
            queue: VecDeque::new(),
        }
    }

    fn shortest_cycle(
        &mut self,
        start: usize,
        adj: &[Vec<usize>],
        scc_of: &[usize],
        ids: &[NodeId],
    ) -> Vec<String> {
        // Each node is searched from at most once, so start + 1 is a fresh stamp.
        let mark = start + 1;
        self.queue.clear();
        self.stamp[start] = mark;
        self.queue.push_back(start);
        while let Some(v) = self.queue.pop_front() {
            for &w in &adj[v] {
                if w == start {
                    let mut path = vec![v];
                    let mut cur = v;
                    while cur != start {
                        cur = self.parent[cur];
                        path.push(cur);
                    }
                    path.reverse();
                    path.push(start);
                    return path.into_iter().map(|i| ids[i].to_string()).collect();
                }
                if scc_of[w] == scc_of[start] && self.stamp[w] != mark {
                    self.stamp[w] = mark;
                    self.parent[w] = v;
                    self.queue.push_back(w);
                }
            }
        }
        // Unreachable for a node in a cyclic component; naming the node alone
        // still points the user at the right place.
        let me = ids[start].to_string();
        vec![me.clone(), me]
    }
}

/// Kahn's algorithm over resolved nodes; the min-heap picks the smallest
/// ready node so the order does not depend on anything but the graph.
fn load_order(adj: &[Vec<usize>], failure: &[Option<(ResolveError, usize)>]) -> Vec<usize> {
    let n = adj.len();
    let mut pending = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut ready = BinaryHeap::new();
    for v in 0..n {
        if failure[v].is_some() {
            continue;
        }
        pending[v] = adj[v].len();
        for &dep in &adj[v] {
            dependents[dep].push(v);
        }
        if pending[v] == 0 {
            ready.push(Reverse(v));
        }
    }
    let mut order = Vec::new();
    while let Some(Reverse(v)) = ready.pop() {
        order.push(v);
        for &d in &dependents[v] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).expect("test version")
    }

    fn id(name: &str, version: &str) -> NodeId {
        NodeId::new(name, v(version))
    }

    fn node(name: &str, version: &str, deps: &[(&str, &str)]) -> SkillNode {
        SkillNode {
            name: name.to_owned(),
            version: v(version),
            dependencies: deps
                .iter()
                .map(|(d, r)| {
                    (
                        (*d).to_owned(),
                        VersionReq::parse(r).expect("test requirement"),
                    )
                })
                .collect(),
        }
    }

    fn bound<'r>(r: &'r Resolution, name: &str, version: &str, dep: &str) -> Option<&'r NodeId> {
        r.resolved.get(&id(name, version))?.get(dep)
    }

    fn position(order: &[NodeId], target: &NodeId) -> usize {
        order
            .iter()
            .position(|x| x == target)
            .unwrap_or_else(|| panic!("{target} not in load order"))
    }

    #[test]
    fn picks_highest_matching_version() {
        let r = resolve(&[
            node("text", "1.0.0", &[]),
            node("text", "1.4.0", &[]),
            node("text", "1.5.0-beta.1", &[]),
            node("text", "2.1.0", &[]),
            node("a", "1.0.0", &[("text", "^1")]),
        ]);
        // 1.5.0-beta.1 is higher but a pre-release, which `^1` does not match.
        assert_eq!(bound(&r, "a", "1.0.0", "text"), Some(&id("text", "1.4.0")));
        assert!(r.failed.is_empty());
    }

    #[test]
    fn prerelease_requirement_binds_prerelease() {
        let r = resolve(&[
            node("text", "1.4.0", &[]),
            node("text", "1.5.0-beta.1", &[]),
            node("a", "1.0.0", &[("text", ">=1.5.0-beta.0")]),
        ]);
        assert_eq!(
            bound(&r, "a", "1.0.0", "text"),
            Some(&id("text", "1.5.0-beta.1"))
        );
    }

    #[test]
    fn compatible_requirements_share_one_version() {
        let r = resolve(&[
            node("text", "1.1.0", &[]),
            node("text", "1.4.0", &[]),
            node("a", "1.0.0", &[("text", "^1.1")]),
            node("b", "1.0.0", &[("text", ">=1.0, <2")]),
        ]);
        let shared = id("text", "1.4.0");
        assert_eq!(bound(&r, "a", "1.0.0", "text"), Some(&shared));
        assert_eq!(bound(&r, "b", "1.0.0", "text"), Some(&shared));
    }

    #[test]
    fn incompatible_majors_load_side_by_side() {
        let r = resolve(&[
            node("text", "1.4.0", &[]),
            node("text", "2.1.0", &[]),
            node("a", "1.0.0", &[("text", "^1")]),
            node("b", "1.0.0", &[("text", "^2")]),
        ]);
        assert_eq!(bound(&r, "a", "1.0.0", "text"), Some(&id("text", "1.4.0")));
        assert_eq!(bound(&r, "b", "1.0.0", "text"), Some(&id("text", "2.1.0")));
        assert_eq!(r.resolved.len(), 4);
        assert!(r.load_order.contains(&id("text", "1.4.0")));
        assert!(r.load_order.contains(&id("text", "2.1.0")));
    }

    #[test]
    fn missing_dependency() {
        let r = resolve(&[node("a", "1.0.0", &[("text", "^1")])]);
        let err = &r.failed[&id("a", "1.0.0")];
        assert_eq!(
            err,
            &ResolveError::Missing {
                dependency: "text".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "dependency `text` is not installed; install a skill named `text` or remove it from [dependencies]"
        );
        assert!(r.resolved.is_empty());
        assert!(r.load_order.is_empty());
    }

    #[test]
    fn unsatisfiable_lists_available_descending() {
        let r = resolve(&[
            node("text", "1.4.0", &[]),
            node("text", "2.1.0", &[]),
            node("a", "1.0.0", &[("text", "^3.0")]),
        ]);
        let err = &r.failed[&id("a", "1.0.0")];
        assert_eq!(
            err,
            &ResolveError::Unsatisfiable {
                dependency: "text".into(),
                requirement: VersionReq::parse("^3.0").expect("req"),
                available: vec![v("2.1.0"), v("1.4.0")],
            }
        );
        assert_eq!(
            err.to_string(),
            "no installed version of `text` satisfies `^3.0` (installed: 2.1.0, 1.4.0); install a matching version or change the requirement"
        );
    }

    #[test]
    fn two_cycle_reports_exact_path_for_each_member() {
        let r = resolve(&[
            node("a", "1.0.0", &[("b", "^1")]),
            node("b", "1.0.0", &[("a", "^1")]),
        ]);
        let a = &r.failed[&id("a", "1.0.0")];
        assert_eq!(
            a,
            &ResolveError::Cycle {
                path: vec!["a@1.0.0".into(), "b@1.0.0".into(), "a@1.0.0".into()]
            }
        );
        assert_eq!(
            a.to_string(),
            "dependency cycle: a@1.0.0 -> b@1.0.0 -> a@1.0.0; remove one of these dependencies"
        );
        assert_eq!(
            r.failed[&id("b", "1.0.0")],
            ResolveError::Cycle {
                path: vec!["b@1.0.0".into(), "a@1.0.0".into(), "b@1.0.0".into()]
            }
        );
        assert!(r.resolved.is_empty());
    }

    #[test]
    fn three_cycle_reports_exact_path() {
        let r = resolve(&[
            node("a", "1.0.0", &[("b", "*")]),
            node("b", "1.0.0", &[("c", "*")]),
            node("c", "1.0.0", &[("a", "*")]),
            node("ok", "1.0.0", &[]),
        ]);
        let path = |p: &[&str]| ResolveError::Cycle {
            path: p.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(
            r.failed[&id("a", "1.0.0")],
            path(&["a@1.0.0", "b@1.0.0", "c@1.0.0", "a@1.0.0"])
        );
        assert_eq!(
            r.failed[&id("b", "1.0.0")],
            path(&["b@1.0.0", "c@1.0.0", "a@1.0.0", "b@1.0.0"])
        );
        assert_eq!(
            r.failed[&id("c", "1.0.0")],
            path(&["c@1.0.0", "a@1.0.0", "b@1.0.0", "c@1.0.0"])
        );
        assert_eq!(r.load_order, vec![id("ok", "1.0.0")]);
    }

    #[test]
    fn shortest_cycle_is_reported_when_several_exist() {
        // a is on a->b->a and a->c->d->a; the short one is the useful one.
        let r = resolve(&[
            node("a", "1.0.0", &[("b", "*"), ("c", "*")]),
            node("b", "1.0.0", &[("a", "*")]),
            node("c", "1.0.0", &[("d", "*")]),
            node("d", "1.0.0", &[("a", "*")]),
        ]);
        assert_eq!(
            r.failed[&id("a", "1.0.0")],
            ResolveError::Cycle {
                path: vec!["a@1.0.0".into(), "b@1.0.0".into(), "a@1.0.0".into()]
            }
        );
        assert_eq!(
            r.failed[&id("d", "1.0.0")],
            ResolveError::Cycle {
                path: vec![
                    "d@1.0.0".into(),
                    "a@1.0.0".into(),
                    "c@1.0.0".into(),
                    "d@1.0.0".into()
                ]
            }
        );
    }

    #[test]
    fn self_dependency_is_a_cycle_of_one() {
        let r = resolve(&[node("a", "1.0.0", &[("a", "^1")])]);
        assert_eq!(
            r.failed[&id("a", "1.0.0")],
            ResolveError::Cycle {
                path: vec!["a@1.0.0".into(), "a@1.0.0".into()]
            }
        );
    }

    #[test]
    fn depending_on_another_version_of_own_name_is_allowed() {
        let r = resolve(&[node("a", "1.0.0", &[]), node("a", "2.0.0", &[("a", "^1")])]);
        assert_eq!(bound(&r, "a", "2.0.0", "a"), Some(&id("a", "1.0.0")));
        assert_eq!(r.load_order, vec![id("a", "1.0.0"), id("a", "2.0.0")]);
    }

    #[test]
    fn local_error_takes_precedence_over_cycle() {
        let r = resolve(&[
            node("a", "1.0.0", &[("b", "*")]),
            node("b", "1.0.0", &[("a", "*"), ("zz", "*")]),
        ]);
        assert_eq!(
            r.failed[&id("b", "1.0.0")],
            ResolveError::Missing {
                dependency: "zz".into()
            }
        );
        assert!(matches!(
            r.failed[&id("a", "1.0.0")],
            ResolveError::Cycle { .. }
        ));
    }

    #[test]
    fn failure_propagates_transitively_but_unrelated_skills_resolve() {
        let r = resolve(&[
            node("c", "1.0.0", &[("gone", "^1")]),
            node("b", "1.0.0", &[("c", "^1")]),
            node("a", "1.0.0", &[("b", "^1")]),
            node("top", "1.0.0", &[("a", "^1")]),
            node("x", "1.0.0", &[]),
            node("y", "1.0.0", &[("x", "^1")]),
        ]);
        let missing = ResolveError::Missing {
            dependency: "gone".into(),
        };
        assert_eq!(r.failed[&id("c", "1.0.0")], missing);
        assert_eq!(
            r.failed[&id("b", "1.0.0")],
            ResolveError::DependencyFailed {
                dependency: "c@1.0.0".into(),
                reason: Box::new(missing.clone()),
            }
        );
        let via_c = |dependency: &str| ResolveError::DependencyFailed {
            dependency: dependency.into(),
            reason: Box::new(ResolveError::DependencyFailed {
                dependency: "c@1.0.0".into(),
                reason: Box::new(missing.clone()),
            }),
        };
        // Nesting stays at two levels however deep the chain goes.
        assert_eq!(r.failed[&id("a", "1.0.0")], via_c("b@1.0.0"));
        assert_eq!(r.failed[&id("top", "1.0.0")], via_c("a@1.0.0"));
        assert_eq!(
            r.failed[&id("top", "1.0.0")].to_string(),
            "dependency `a@1.0.0` failed to resolve: dependency `c@1.0.0` failed to resolve: \
             dependency `gone` is not installed; install a skill named `gone` or remove it from [dependencies]"
        );
        assert_eq!(r.load_order, vec![id("x", "1.0.0"), id("y", "1.0.0")]);
    }

    #[test]
    fn dependents_of_a_cycle_fail_with_the_cycle_as_reason() {
        let r = resolve(&[
            node("a", "1.0.0", &[("b", "*")]),
            node("b", "1.0.0", &[("a", "*")]),
            node("user", "1.0.0", &[("a", "*")]),
        ]);
        assert_eq!(
            r.failed[&id("user", "1.0.0")],
            ResolveError::DependencyFailed {
                dependency: "a@1.0.0".into(),
                reason: Box::new(ResolveError::Cycle {
                    path: vec!["a@1.0.0".into(), "b@1.0.0".into(), "a@1.0.0".into()]
                }),
            }
        );
    }

    #[test]
    fn diamond_shares_the_bottom() {
        let r = resolve(&[
            node("a", "1.0.0", &[("b", "^1"), ("c", "^1")]),
            node("b", "1.0.0", &[("d", "^1")]),
            node("c", "1.0.0", &[("d", "^1.2")]),
            node("d", "1.0.0", &[]),
            node("d", "1.3.0", &[]),
        ]);
        assert_eq!(bound(&r, "b", "1.0.0", "d"), Some(&id("d", "1.3.0")));
        assert_eq!(bound(&r, "c", "1.0.0", "d"), Some(&id("d", "1.3.0")));
        assert_eq!(
            r.load_order,
            vec![
                id("d", "1.0.0"),
                id("d", "1.3.0"),
                id("b", "1.0.0"),
                id("c", "1.0.0"),
                id("a", "1.0.0")
            ]
        );
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        let r = resolve(&[
            node("app", "1.0.0", &[("ui", "^1"), ("net", "^1")]),
            node("ui", "1.0.0", &[("text", "^2")]),
            node("net", "1.0.0", &[]),
            node("text", "2.0.0", &[]),
        ]);
        let order = &r.load_order;
        assert_eq!(order.len(), 4);
        assert!(position(order, &id("text", "2.0.0")) < position(order, &id("ui", "1.0.0")));
        assert!(position(order, &id("ui", "1.0.0")) < position(order, &id("app", "1.0.0")));
        assert!(position(order, &id("net", "1.0.0")) < position(order, &id("app", "1.0.0")));
    }

    #[test]
    fn dependents_closure_follows_bindings_and_failures() {
        let nodes = vec![
            node("text", "1.0.0", &[]),
            node("text", "2.0.0", &[]),
            node("a", "1.0.0", &[("text", "^1")]),
            node("b", "1.0.0", &[("text", "^2")]),
            node("c", "1.0.0", &[("a", "^1")]),
            node("e", "1.0.0", &[("text", "^9")]),
            node("f", "1.0.0", &[("e", "^1")]),
            node("unrelated", "1.0.0", &[]),
            // x@1 reaches text through y@1; x@2 binds y@2, which does not.
            node("y", "1.0.0", &[("text", "*")]),
            node("y", "2.0.0", &[]),
            node("x", "1.0.0", &[("y", "^1")]),
            node("x", "2.0.0", &[("y", "^2")]),
        ];
        let r = resolve(&nodes);
        assert!(r.failed.contains_key(&id("e", "1.0.0")));
        assert_eq!(
            dependents_closure(&r, &nodes, "text"),
            vec![
                id("a", "1.0.0"),
                id("b", "1.0.0"),
                id("c", "1.0.0"),
                id("e", "1.0.0"),
                id("f", "1.0.0"),
                id("x", "1.0.0"),
                id("y", "1.0.0"),
            ]
        );
        assert_eq!(dependents_closure(&r, &nodes, "a"), vec![id("c", "1.0.0")]);
        assert!(dependents_closure(&r, &nodes, "unrelated").is_empty());
    }

    #[test]
    fn dependents_closure_includes_dependents_of_missing_skill() {
        let nodes = vec![
            node("a", "1.0.0", &[("text", "^1")]),
            node("b", "1.0.0", &[("a", "^1")]),
        ];
        let r = resolve(&nodes);
        assert_eq!(
            dependents_closure(&r, &nodes, "text"),
            vec![id("a", "1.0.0"), id("b", "1.0.0")]
        );
    }

    #[test]
    fn duplicate_keeps_first_and_reports_later() {
        let nodes = vec![
            node("text", "1.0.0", &[]),
            node("a", "1.0.0", &[("text", "^1")]),
            node("a", "1.0.0", &[("gone", "*")]),
            node("a", "1.0.0", &[]),
        ];
        let r = resolve(&nodes);
        assert_eq!(bound(&r, "a", "1.0.0", "text"), Some(&id("text", "1.0.0")));
        assert!(r.failed.is_empty());
        let dup = (
            id("a", "1.0.0"),
            ResolveError::Duplicate {
                name: "a".into(),
                version: v("1.0.0"),
            },
        );
        assert_eq!(r.duplicates, vec![dup.clone(), dup]);
        assert_eq!(r.load_order, vec![id("text", "1.0.0"), id("a", "1.0.0")]);
    }

    fn chain(len: usize, bottom_deps: &[(&str, &str)]) -> Vec<SkillNode> {
        (0..len)
            .map(|i| {
                let name = format!("n{i}");
                let next = format!("n{}", i + 1);
                if i + 1 == len {
                    node(&name, "1.0.0", bottom_deps)
                } else {
                    node(&name, "1.0.0", &[(next.as_str(), "^1")])
                }
            })
            .collect()
    }

    #[test]
    fn ten_thousand_node_chain_does_not_overflow() {
        const LEN: usize = 10_000;
        let nodes = chain(LEN, &[]);
        let r = resolve(&nodes);
        assert_eq!(r.resolved.len(), LEN);
        assert!(r.failed.is_empty());
        assert_eq!(
            r.load_order.first(),
            Some(&id(&format!("n{}", LEN - 1), "1.0.0"))
        );
        assert_eq!(r.load_order.last(), Some(&id("n0", "1.0.0")));
        let closure = dependents_closure(&r, &nodes, &format!("n{}", LEN - 1));
        assert_eq!(closure.len(), LEN - 1);
    }

    #[test]
    fn ten_thousand_node_chain_failing_at_the_bottom() {
        const LEN: usize = 10_000;
        let r = resolve(&chain(LEN, &[("gone", "*")]));
        assert_eq!(r.failed.len(), LEN);
        assert!(r.resolved.is_empty());
        let top = &r.failed[&id("n0", "1.0.0")];
        assert_eq!(
            top,
            &ResolveError::DependencyFailed {
                dependency: "n1@1.0.0".into(),
                reason: Box::new(ResolveError::DependencyFailed {
                    dependency: format!("n{}@1.0.0", LEN - 1),
                    reason: Box::new(ResolveError::Missing {
                        dependency: "gone".into()
                    }),
                }),
            }
        );
    }

    #[test]
    fn long_cycle_is_reported_whole() {
        const LEN: usize = 300;
        let mut nodes = chain(LEN, &[("n0", "*")]);
        nodes.push(node("above", "1.0.0", &[("n5", "*")]));
        let r = resolve(&nodes);
        assert_eq!(r.failed.len(), LEN + 1);
        match &r.failed[&id("n7", "1.0.0")] {
            ResolveError::Cycle { path } => {
                assert_eq!(path.len(), LEN + 1);
                assert_eq!(path[0], "n7@1.0.0");
                assert_eq!(path[1], "n8@1.0.0");
                assert_eq!(path[LEN], "n7@1.0.0");
            }
            other => panic!("expected a cycle, got {other:?}"),
        }
    }

    #[test]
    fn empty_input() {
        assert_eq!(resolve(&[]), Resolution::default());
        assert!(dependents_closure(&Resolution::default(), &[], "x").is_empty());
    }

    /// Deterministic xorshift64 so the property test needs no extra crates
    /// and a failure reproduces from its seed.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }

    const NAMES: &[&str] = &["a", "b", "c", "d", "e"];
    const VERSIONS: &[&str] = &[
        "0.3.0",
        "1.0.0",
        "1.2.0",
        "1.2.5",
        "2.0.0",
        "2.1.0-beta.1",
        "2.1.0",
    ];
    const REQS: &[&str] = &[
        "^1",
        "^2",
        "*",
        ">=1.1, <2",
        "=2.1.0-beta.1",
        "^0.3",
        "~1.2",
        "^3",
        ">=2.1.0-beta.0",
    ];

    fn random_graph(rng: &mut XorShift) -> Vec<SkillNode> {
        let count = rng.below(12);
        let mut nodes = Vec::new();
        for _ in 0..count {
            let name = *rng.pick(NAMES);
            let version = *rng.pick(VERSIONS);
            let mut deps = Vec::new();
            for _ in 0..rng.below(4) {
                // "zz" is never installed, to exercise Missing.
                let dep = if rng.below(10) == 0 {
                    "zz"
                } else {
                    *rng.pick(NAMES)
                };
                deps.push((dep, *rng.pick(REQS)));
            }
            nodes.push(node(name, version, &deps));
        }
        nodes
    }

    /// Independent, naive binding: highest matching installed version.
    fn oracle_bind(nodes: &[SkillNode], dep: &str, req: &VersionReq) -> Option<NodeId> {
        nodes
            .iter()
            .filter(|n| n.name == dep && req.matches(&n.version))
            .map(SkillNode::id)
            .max()
    }

    fn first_copy<'n>(nodes: &'n [SkillNode], target: &NodeId) -> &'n SkillNode {
        nodes
            .iter()
            .find(|n| &n.id() == target)
            .unwrap_or_else(|| panic!("{target} not in input"))
    }

    fn check_invariants(nodes: &[SkillNode], r: &Resolution) {
        let kept: BTreeSet<NodeId> = nodes.iter().map(SkillNode::id).collect();
        assert_eq!(r.duplicates.len(), nodes.len() - kept.len());
        for (dup, err) in &r.duplicates {
            assert!(kept.contains(dup));
            assert!(matches!(err, ResolveError::Duplicate { .. }));
        }

        for k in &kept {
            assert!(
                r.resolved.contains_key(k) ^ r.failed.contains_key(k),
                "{k} must be in exactly one of resolved/failed"
            );
        }
        assert_eq!(r.resolved.len() + r.failed.len(), kept.len());

        for (nid, deps) in &r.resolved {
            let src = first_copy(nodes, nid);
            assert_eq!(
                deps.keys().collect::<Vec<_>>(),
                src.dependencies.keys().collect::<Vec<_>>(),
                "{nid}: every dependency must be bound"
            );
            for (dep, target) in deps {
                let req = &src.dependencies[dep];
                assert_eq!(&target.name, dep);
                assert!(
                    req.matches(&target.version),
                    "{nid}: {target} must satisfy {req}"
                );
                assert!(
                    r.resolved.contains_key(target),
                    "{nid}: {target} must be resolved"
                );
                assert_eq!(
                    oracle_bind(nodes, dep, req).as_ref(),
                    Some(target),
                    "{nid}: not the highest match"
                );
            }
        }

        for (nid, err) in &r.failed {
            let src = first_copy(nodes, nid);
            let first_unbound = src
                .dependencies
                .iter()
                .find(|(d, req)| oracle_bind(nodes, d, req).is_none())
                .map(|(d, _)| d.clone());
            if let Some(dep) = first_unbound {
                let reported = match err {
                    ResolveError::Missing { dependency }
                    | ResolveError::Unsatisfiable { dependency, .. } => Some(dependency.clone()),
                    _ => None,
                };
                assert_eq!(
                    reported,
                    Some(dep),
                    "{nid}: local errors come first, in name order"
                );
            }
            match err {
                ResolveError::Missing { dependency } => {
                    assert!(src.dependencies.contains_key(dependency));
                    assert!(!nodes.iter().any(|n| &n.name == dependency));
                }
                ResolveError::Unsatisfiable {
                    dependency,
                    requirement,
                    available,
                } => {
                    assert_eq!(src.dependencies.get(dependency), Some(requirement));
                    let mut expected: Vec<Version> = kept
                        .iter()
                        .filter(|k| &k.name == dependency)
                        .map(|k| k.version.clone())
                        .collect();
                    expected.reverse();
                    assert!(!expected.is_empty());
                    assert_eq!(available, &expected);
                    assert!(!available.iter().any(|ver| requirement.matches(ver)));
                }
                ResolveError::Cycle { path } => {
                    let me = nid.to_string();
                    assert!(path.len() >= 2);
                    assert_eq!(path.first(), Some(&me));
                    assert_eq!(path.last(), Some(&me));
                    // Every step must be a real binding.
                    for step in path.windows(2) {
                        let from = kept
                            .iter()
                            .find(|k| k.to_string() == step[0])
                            .unwrap_or_else(|| panic!("unknown node {}", step[0]));
                        let from_node = first_copy(nodes, from);
                        let ok = from_node.dependencies.iter().any(|(d, req)| {
                            oracle_bind(nodes, d, req).map(|t| t.to_string())
                                == Some(step[1].clone())
                        });
                        assert!(ok, "{} does not bind {}", step[0], step[1]);
                    }
                }
                ResolveError::DependencyFailed { dependency, reason } => {
                    let bound_to_it = src.dependencies.iter().any(|(d, req)| {
                        oracle_bind(nodes, d, req).map(|t| t.to_string()).as_ref()
                            == Some(dependency)
                    });
                    assert!(bound_to_it, "{nid} does not bind {dependency}");
                    let dep_failed = r.failed.iter().any(|(k, _)| &k.to_string() == dependency);
                    assert!(dep_failed, "{dependency} should have failed");
                    if let ResolveError::DependencyFailed { reason: inner, .. } = reason.as_ref() {
                        assert!(!matches!(
                            inner.as_ref(),
                            ResolveError::DependencyFailed { .. }
                        ));
                    }
                }
                ResolveError::Duplicate { .. } => panic!("{nid}: Duplicate belongs in duplicates"),
            }
        }

        let mut seen = BTreeSet::new();
        for nid in &r.load_order {
            let deps = r
                .resolved
                .get(nid)
                .unwrap_or_else(|| panic!("{nid} in load order but not resolved"));
            for target in deps.values() {
                assert!(seen.contains(target), "{target} must load before {nid}");
            }
            assert!(seen.insert(nid.clone()), "{nid} twice in load order");
        }
        assert_eq!(seen.len(), r.resolved.len());
    }

    fn oracle_closure(nodes: &[SkillNode], r: &Resolution, name: &str) -> Vec<NodeId> {
        let kept: BTreeSet<NodeId> = nodes.iter().map(SkillNode::id).collect();
        let mut set: BTreeSet<NodeId> = kept
            .iter()
            .filter(|k| first_copy(nodes, k).dependencies.contains_key(name))
            .cloned()
            .collect();
        loop {
            let before = set.len();
            for k in &kept {
                let reaches = first_copy(nodes, k)
                    .dependencies
                    .iter()
                    .any(|(d, req)| oracle_bind(nodes, d, req).is_some_and(|t| set.contains(&t)));
                if reaches {
                    set.insert(k.clone());
                }
            }
            if set.len() == before {
                break;
            }
        }
        set.into_iter()
            .filter(|k| r.resolved.contains_key(k) || r.failed.contains_key(k))
            .collect()
    }

    #[test]
    fn random_graphs_satisfy_invariants() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..2_000 {
            let nodes = random_graph(&mut rng);
            let r = resolve(&nodes);
            check_invariants(&nodes, &r);

            // Output must not depend on input order (duplicates aside).
            let mut unique: Vec<SkillNode> = Vec::new();
            for n in &nodes {
                if !unique.iter().any(|u| u.id() == n.id()) {
                    unique.push(n.clone());
                }
            }
            let forward = resolve(&unique);
            unique.reverse();
            assert_eq!(
                resolve(&unique),
                forward,
                "round {round}: order-dependent result"
            );
            assert_eq!(forward.resolved, r.resolved);
            assert_eq!(forward.failed, r.failed);

            for name in NAMES.iter().chain(["zz"].iter()) {
                assert_eq!(
                    dependents_closure(&r, &nodes, name),
                    oracle_closure(&nodes, &r, name),
                    "round {round}: closure of {name}"
                );
            }
        }
    }
}
