//! Nodes' leases checked against the subnet claims of weft's own allocation ([`crate::alloc`]).
//!
//! Without a podCIDR, a Node's subnet is whatever its `weft.dev/subnet` annotation says, and the agent on
//! that node writes the annotation. Admission lets the older of two overlapping leases win, so a rogue Node
//! older than its victim could annotate the victim's subnet and take its traffic on every third node. The
//! claim is what the API server arbitrated (create wins, and the admission policy in deploy/weft.yaml lets an
//! agent create claims only naming its own Node), so an annotated subnet counts only if its claim names that
//! Node (and its uid, when the claim carries one) and is the node's oldest claim. Otherwise the Node is an
//! undecodable entry, with the reason: admission refuses it and reports it (`weft_peers_rejected`,
//! `weftctl status`), and every other Node keeps working. A podCIDR is the controller manager's word: no
//! claim is needed.
//!
//! A view needs Nodes and claims together, so a lease watch is two API watches (Nodes, claims in
//! weft-system) merged here over the same maps a list builds: a claim event re-judges every Node (claim events
//! are rare: one per allocation), a Node event re-judges that Node. The two streams are not ordered with each
//! other, and an honest agent creates its claim before it annotates its Node, so a Node whose claim the view
//! does not have yet is checked once against the API (a GET of that claim) before it is refused.
use crate::alloc::{self, Claims, Held};
use crate::calls::Kube;
use crate::node;
use crate::watch::digest;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease as Claim;
use k8s_openapi::api::core::v1::Node;
use std::collections::{BTreeMap, HashMap};
use tokio::sync::mpsc;
use weft_store::{Created, LeaseEntry, StoreError, WatchEvent, WatchStream};
use weft_types::Lease;

/// What the lease view needs of a Node. (Serialize only so that watches can fingerprint it.)
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct NodeView {
    pub name: String,
    pub uid: Option<String>,
    pub created: i64,
    /// None: weft has published nothing here. Err: malformed annotations.
    pub lease: Option<Result<Lease, String>>,
    /// The subnet is weft's own (annotation, no podCIDR): it needs a claim.
    pub needs_claim: bool,
}

impl NodeView {
    pub fn of(n: &Node) -> Self {
        NodeView {
            name: node::name(n),
            uid: n.metadata.uid.clone(),
            created: n.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
            lease: node::lease_of(n).transpose(),
            needs_claim: matches!(node::pod_cidrs(n), Ok((None, _))),
        }
    }

    /// The claim this Node's lease needs and the view does not back (yet): its name.
    fn missing_claim(&self, claims: &Claims) -> Option<String> {
        match &self.lease {
            Some(Ok(l)) if self.needs_claim && claims.backs(&self.name, self.uid.as_deref(), l.subnet).is_err() => {
                Some(alloc::claim_name(l.subnet))
            }
            _ => None,
        }
    }

    /// The Node as a lease entry for admission: keyed by Node name, ordered by creationTimestamp then name, and
    /// `Err` (refused and reported by the consumer) when weft's annotations are malformed or, for a weft-allocated
    /// subnet, its claim does not back it. None: no lease.
    pub fn entry(&self, claims: &Claims) -> Option<LeaseEntry> {
        let lease = match self.lease.clone()? {
            Ok(l) if self.needs_claim => claims.backs(&self.name, self.uid.as_deref(), l.subnet).map(|()| l),
            other => other,
        };
        Some(LeaseEntry {
            key: self.name.clone(),
            key_subnet: None,
            key_node: Some(self.name.clone()),
            created: Created(self.created, self.name.clone()),
            lease,
        })
    }
}

/// A lease list: the Nodes and claims it was judged with, and where the claims list was (a watch from this
/// list's revision starts from exactly this).
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    pub nodes: BTreeMap<String, NodeView>,
    pub claims: Claims,
    pub claims_rv: String,
}

impl View {
    pub fn entries(&self) -> Vec<LeaseEntry> {
        self.nodes.values().filter_map(|v| v.entry(&self.claims)).collect()
    }

    fn unbacked(&self) -> bool {
        self.nodes.values().any(|v| v.missing_claim(&self.claims).is_some())
    }
}

/// Lists claims, then Nodes (a claim's Node is older than the claim). If a Node names a claim the first
/// list did not have, the claims are listed once more: it may have been created between the two lists.
pub(crate) async fn list(kube: &Kube) -> Result<(View, Option<String>), StoreError> {
    let claims = kube.system::<Claim>().list().await?;
    let nodes = kube.cluster::<Node>().list().await?;
    let mut view = View {
        nodes: nodes.items.iter().map(|n| (node::name(n), NodeView::of(n))).collect(),
        claims: Claims::new(claims.items.iter().filter_map(alloc::held)),
        claims_rv: claims.metadata.resource_version.unwrap_or_default(),
    };
    if view.unbacked() {
        let again = kube.system::<Claim>().list().await?;
        view.claims = Claims::new(again.items.iter().filter_map(alloc::held));
        view.claims_rv = again.metadata.resource_version.unwrap_or_default();
    }
    Ok((view, nodes.metadata.resource_version))
}

/// Merges a Node watch and a claims watch, both started where `view` was listed, into lease-entry events.
pub(crate) fn merge(
    kube: Kube,
    view: View,
    nodes: WatchStream<NodeView>,
    claims: WatchStream<Held>,
) -> WatchStream<LeaseEntry> {
    let (tx, rx) = mpsc::channel(256);
    let shown = view.entries().iter().map(|e| (e.key.clone(), digest(e))).collect();
    let m = Merge { kube, view, shown, tx };
    tokio::spawn(m.run(nodes, claims));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) }).boxed()
}

struct Merge {
    kube: Kube,
    view: View,
    /// What the consumer holds: per key, a digest of the entry last delivered.
    shown: HashMap<String, u64>,
    tx: mpsc::Sender<Result<WatchEvent<LeaseEntry>, StoreError>>,
}

type Event<T> = Option<Result<WatchEvent<T>, StoreError>>;

impl Merge {
    async fn run(mut self, mut nodes: WatchStream<NodeView>, mut claims: WatchStream<Held>) {
        loop {
            let sent = tokio::select! {
                ev = nodes.next() => self.on_node(ev).await,
                ev = claims.next() => self.on_claim(ev).await,
                _ = self.tx.closed() => return,
            };
            if !sent {
                return;
            }
        }
    }

    /// False when the stream is over (it ended, failed or reset, or the consumer left).
    async fn on_node(&mut self, ev: Event<NodeView>) -> bool {
        match ev {
            Some(Ok(WatchEvent::Put(v))) => {
                let name = v.name.clone();
                let missing = v.missing_claim(&self.view.claims);
                self.view.nodes.insert(name.clone(), v);
                if let Some(claim) = missing {
                    match self.kube.system::<Claim>().get(&claim).await {
                        Ok(c) => {
                            if self.view.claims.set(&claim, c.as_ref().and_then(alloc::held)) {
                                return self.judge_all().await;
                            }
                        }
                        Err(e) => return self.end(Err(e.into())).await,
                    }
                }
                self.judge(&name).await
            }
            Some(Ok(WatchEvent::Delete(name))) => {
                self.view.nodes.remove(&name);
                self.judge(&name).await
            }
            other => self.end_with(other).await,
        }
    }

    async fn on_claim(&mut self, ev: Event<Held>) -> bool {
        let changed = match ev {
            Some(Ok(WatchEvent::Put(h))) => self.view.claims.set(&h.name.clone(), Some(h)),
            Some(Ok(WatchEvent::Delete(name))) => self.view.claims.set(&name, None),
            other => return self.end_with(other).await,
        };
        !changed || self.judge_all().await
    }

    async fn judge_all(&mut self) -> bool {
        let mut names: Vec<String> = self.view.nodes.keys().cloned().collect();
        names.extend(self.shown.keys().filter(|k| !self.view.nodes.contains_key(*k)).cloned());
        for n in names {
            if !self.judge(&n).await {
                return false;
            }
        }
        true
    }

    /// Delivers what changed about one Node's entry.
    async fn judge(&mut self, name: &str) -> bool {
        let ev = match self.view.nodes.get(name).and_then(|v| v.entry(&self.view.claims)) {
            Some(e) => {
                let d = digest(&e);
                if self.shown.insert(name.to_string(), d) == Some(d) {
                    return true;
                }
                WatchEvent::Put(e)
            }
            None if self.shown.remove(name).is_some() => WatchEvent::Delete(name.to_string()),
            None => return true,
        };
        self.tx.send(Ok(ev)).await.is_ok()
    }

    async fn end_with<T>(&mut self, ev: Event<T>) -> bool {
        match ev {
            Some(Ok(WatchEvent::Reset)) => self.end(Ok(WatchEvent::Reset)).await,
            Some(Err(e)) => self.end(Err(e)).await,
            // A stream that ends without saying why (the inner watch task is gone): the consumer relists.
            _ => self.end(Err(StoreError::Unavailable("lease watch ended".into()))).await,
        }
    }

    async fn end(&mut self, last: Result<WatchEvent<LeaseEntry>, StoreError>) -> bool {
        let _ = self.tx.send(last).await;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, uid: &str, created: &str, subnet: &str, pod_cidr: Option<&str>) -> NodeView {
        let mut n = json!({"metadata": {"name": name, "uid": uid, "creationTimestamp": created, "annotations": {
            node::NODE_IP: "192.0.2.1", node::SUBNET: subnet}}});
        if let Some(c) = pod_cidr {
            n["spec"] = json!({"podCIDR": c});
        }
        NodeView::of(&serde_json::from_value(n).unwrap())
    }

    fn claim(subnet: &str, holder: &str, uid: Option<&str>, created: &str) -> Held {
        let s: ipnet::Ipv4Net = subnet.parse().unwrap();
        let mut c = json!({"metadata": {"name": alloc::claim_name(s), "creationTimestamp": created,
            "labels": {alloc::CLAIM_LABEL: "true"}, "annotations": {node::SUBNET: subnet}},
            "spec": {"holderIdentity": holder}});
        if let Some(u) = uid {
            c["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": holder, "uid": u}]);
        }
        alloc::held(&serde_json::from_value(c).unwrap()).unwrap()
    }

    fn refused(v: &NodeView, c: &Claims) -> String {
        v.entry(c).unwrap().lease.unwrap_err()
    }

    #[test]
    fn an_annotated_subnet_counts_only_with_the_nodes_own_claim() {
        const T: &str = "2024-01-01T00:00:00Z";
        let claims = Claims::new([claim("10.244.2.0/24", "victim", Some("u-v"), T)]);
        let victim = node("victim", "u-v", "2024-01-01T00:00:09Z", "10.244.2.0/24", None);
        assert_eq!(victim.entry(&claims).unwrap().lease.unwrap().subnet.to_string(), "10.244.2.0/24");
        // Older than its victim, annotating the victim's subnet: the claim names someone else.
        let rogue = node("rogue", "u-r", "2024-01-01T00:00:01Z", "10.244.2.0/24", None);
        assert!(refused(&rogue, &claims).contains("is held by \"victim\""), "{}", refused(&rogue, &claims));
        let e = rogue.entry(&claims).unwrap();
        assert_eq!((e.key.as_str(), e.created.0), ("rogue", 1_704_067_201));
        // No claim at all.
        let loner = node("loner", "u-l", T, "10.244.7.0/24", None);
        assert!(refused(&loner, &claims).contains("there is no claim weft-system/subnet-10-244-7-0-24"));
        // A Node re-created under the same name (another uid) is not the Node the claim was made for.
        let reborn = node("victim", "u-2", T, "10.244.2.0/24", None);
        assert!(refused(&reborn, &claims).contains("uid u-v"));
        // A podCIDR needs no claim.
        let pc = node("pc", "u-p", T, "10.244.9.0/24", Some("10.244.9.0/24"));
        assert!(pc.entry(&claims).unwrap().lease.is_ok());
        // No weft annotations: no entry at all.
        let plain = NodeView::of(&serde_json::from_value(json!({"metadata": {"name": "plain"}})).unwrap());
        assert!(plain.entry(&claims).is_none());
    }

    #[test]
    fn garbage_annotations_are_an_undecodable_entry_in_creation_order() {
        let n = json!({"metadata": {"name": "n", "creationTimestamp": "2024-01-01T00:00:10Z", "annotations": {
            node::NODE_IP: "10.0.0.1", node::SUBNET: "10.244.1.0/24", node::BACKEND_DATA: "{garbage"}}});
        let e = NodeView::of(&serde_json::from_value(n).unwrap()).entry(&Claims::default()).unwrap();
        assert_eq!((e.key.as_str(), e.key_node.as_deref()), ("n", Some("n")));
        assert_eq!(e.created, Created(1_704_067_210, "n".into()));
        assert!(e.lease.unwrap_err().contains(node::BACKEND_DATA));
    }

    #[test]
    fn of_a_nodes_claims_only_the_oldest_counts() {
        let mut claims = Claims::new([
            claim("10.244.3.0/24", "greedy", None, "2024-01-01T00:00:05Z"),
            claim("10.244.1.0/24", "greedy", None, "2024-01-01T00:00:02Z"),
            claim("10.244.4.0/24", "greedy", None, "2024-01-01T00:00:09Z"),
        ]);
        let first = node("greedy", "u", "2024-01-01T00:00:00Z", "10.244.1.0/24", None);
        let later = node("greedy", "u", "2024-01-01T00:00:00Z", "10.244.3.0/24", None);
        assert!(first.entry(&claims).unwrap().lease.is_ok());
        assert!(refused(&later, &claims).contains("only its oldest, subnet-10-244-1-0-24, counts"));
        // Releasing the oldest makes the next one count.
        assert!(claims.set("subnet-10-244-1-0-24", None));
        assert!(later.entry(&claims).unwrap().lease.is_ok());
        assert!(!claims.set("subnet-10-244-1-0-24", None), "nothing changed");
    }
}
