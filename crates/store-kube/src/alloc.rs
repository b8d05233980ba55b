//! weft's own subnet allocation, for clusters whose controller manager does not allocate podCIDRs.
//!
//! Two agents racing for one subnet must not both win. Each agent writes only its own Node, so a
//! compare-and-swap on Nodes cannot see the other agent; the CAS has to be on an object both would write.
//! That object is a per-subnet claim: a `coordination.k8s.io/v1` Lease named `subnet-10-244-3-0-24` in
//! `weft-system`, whose `holderIdentity` is the node. Creating an object is atomic in Kubernetes (409
//! AlreadyExists to the loser), so whoever creates the claim owns the subnet. Why a Lease object: it is the
//! API's own "who holds this" type, `kubectl -n weft-system get leases` shows each subnet's HOLDER, and RBAC
//! on it stays inside weft's namespace. weft sets no `leaseDurationSeconds`: claims do not expire.
//!
//! A claim ends when its node releases it, when the Node is deleted (it carries an ownerReference to the Node,
//! so the garbage collector of a real cluster deletes it), or when another agent finds its holder Node gone and
//! deletes it with a resourceVersion precondition (so it never deletes a claim someone just re-created).
//!
//! Order of reads matters: claims are listed before Nodes. A claim's holder Node existed before the claim
//! did, so it is in the later Node list unless it was deleted; the other order could see a brand-new node's
//! claim without its Node and wrongly call it stale.
//!
//! Mixing the two ways is refused: while any other Node has a podCIDR, a Node without one waits for its own
//! (`Unavailable`, retried by the agent) instead of taking a subnet the controller manager may hand out.
//!
//! The claim is also what every agent checks a Node's annotated subnet against (`crate::claimed`): the
//! admission policy in deploy/weft.yaml lets an agent create claims only naming its own Node, so a claim is the
//! API server's word on who owns a subnet, where an annotation is only the node's own. [`Claims::backs`] is
//! that check: the claim exists, names the Node (and its uid), and is the node's oldest claim.
//!
//! Choosing the subnet is `weft_store::alloc::plan`, shared with the other stores: own claim, then hint, then
//! a free one from a random offset (so racing agents mostly try different subnets).
use crate::calls::Kube;
use crate::node::{self, SOURCE, SUBNET};
use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::{Lease as Claim, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::{BTreeMap, HashMap, HashSet};
use weft_store::alloc::{plan, Plan};
use weft_store::StoreError;
use weft_types::NetworkConfig;

/// Label on every claim, so a list of Leases in weft-system can hold other Leases too.
pub const CLAIM_LABEL: &str = "weft.dev/subnet-claim";
const ATTEMPTS: usize = 16;

pub fn claim_name(s: Ipv4Net) -> String {
    format!("subnet-{}-{}", s.network().to_string().replace('.', "-"), s.prefix_len())
}

/// A weft claim as read from the API (any Lease in weft-system with [`CLAIM_LABEL`], a subnet annotation and a
/// holder). (Serialize only so that watches can fingerprint what they last saw.)
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Held {
    pub name: String,
    pub subnet: Ipv4Net,
    pub holder: String,
    /// The uid of the holder Node, from the claim's ownerReference to it (None if it names none).
    pub holder_uid: Option<String>,
    /// creationTimestamp in seconds (0 if absent): of a node's claims, only the oldest counts.
    pub created: i64,
    pub rv: Option<String>,
}

pub(crate) fn held(c: &Claim) -> Option<Held> {
    let m = &c.metadata;
    m.labels.as_ref()?.get(CLAIM_LABEL)?;
    let holder = c.spec.as_ref()?.holder_identity.clone()?;
    let holder_uid =
        m.owner_references.iter().flatten().find(|o| o.kind == "Node" && o.name == holder).map(|o| o.uid.clone());
    Some(Held {
        name: m.name.clone()?,
        subnet: m.annotations.as_ref()?.get(SUBNET)?.parse().ok()?,
        holder,
        holder_uid,
        created: m.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
        rv: m.resource_version.clone(),
    })
}

fn new_claim(subnet: Ipv4Net, n: &Node) -> Claim {
    let owner = n.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node::name(n),
        uid,
        ..OwnerReference::default()
    });
    Claim {
        metadata: ObjectMeta {
            name: Some(claim_name(subnet)),
            labels: Some(BTreeMap::from([(CLAIM_LABEL.to_string(), "true".to_string())])),
            annotations: Some(BTreeMap::from([(SUBNET.to_string(), subnet.to_string())])),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec { holder_identity: Some(node::name(n)), ..LeaseSpec::default() }),
    }
}

async fn claims(kube: &Kube) -> Result<Vec<Held>, StoreError> {
    Ok(kube.system::<Claim>().list().await?.items.iter().filter_map(held).collect())
}

/// The claims a store view knows, by claim name, and each holder's oldest claim: a node may hold one subnet,
/// so a second claim (a rogue agent taking free subnets) backs nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claims {
    by_name: BTreeMap<String, Held>,
    oldest: HashMap<String, String>,
}

impl Claims {
    pub fn new(items: impl IntoIterator<Item = Held>) -> Self {
        let mut c = Claims { by_name: items.into_iter().map(|h| (h.name.clone(), h)).collect(), ..Claims::default() };
        c.index();
        c
    }

    fn index(&mut self) {
        self.oldest.clear();
        for h in self.by_name.values() {
            let older = |cur: &String| {
                let c = &self.by_name[cur];
                (h.created, &h.name) < (c.created, &c.name)
            };
            if self.oldest.get(&h.holder).is_none_or(older) {
                self.oldest.insert(h.holder.clone(), h.name.clone());
            }
        }
    }

    /// Sets (Some) or removes (None) the claim `name`; true if that changed anything.
    pub fn set(&mut self, name: &str, h: Option<Held>) -> bool {
        let changed = match h {
            Some(h) => self.by_name.insert(name.to_string(), h.clone()).as_ref() != Some(&h),
            None => self.by_name.remove(name).is_some(),
        };
        if changed {
            self.index();
        }
        changed
    }

    /// Ok if the claim on `subnet` backs Node `node` (uid `uid`): it exists, is for that subnet, names the
    /// node as holder (and its uid, when the claim carries one), and is the node's oldest claim. Err says why not.
    pub fn backs(&self, node: &str, uid: Option<&str>, subnet: Ipv4Net) -> Result<(), String> {
        let name = claim_name(subnet);
        let at = format!("{}/{name}", crate::calls::SYSTEM_NAMESPACE);
        let not = |why: String| Err(format!("Node {node}: weft.dev/subnet {subnet} is not backed by its claim: {why}"));
        let Some(h) = self.by_name.get(&name) else { return not(format!("there is no claim {at}")) };
        if h.subnet != subnet {
            return not(format!("claim {at} is for {}", h.subnet));
        }
        if h.holder != node {
            return not(format!("claim {at} is held by {:?}", h.holder));
        }
        if let (Some(want), Some(have)) = (h.holder_uid.as_deref(), uid) {
            if want != have {
                return not(format!("claim {at} belongs to Node uid {want}, this Node's uid is {have}"));
            }
        }
        match self.oldest.get(node) {
            Some(first) if *first != name => {
                not(format!("{node} holds more than one claim and only its oldest, {first}, counts"))
            }
            _ => Ok(()),
        }
    }
}

/// Claims a subnet for `me` (its own claim if it has one, else the hint, else a free one) and returns it.
pub(crate) async fn allocate(
    kube: &Kube,
    cfg: &NetworkConfig,
    me: &Node,
    hint: Option<Ipv4Net>,
) -> Result<Ipv4Net, StoreError> {
    let my_name = node::name(me);
    let anns = me.metadata.annotations.clone().unwrap_or_default();
    // The subnet weft published on this Node before: the best hint, since peers already route it here.
    let published = anns
        .get(SUBNET)
        .filter(|_| anns.get(SOURCE).map(String::as_str) == Some(node::Source::Weft.as_str()))
        .and_then(|s| s.parse::<Ipv4Net>().ok());
    for attempt in 0..ATTEMPTS {
        let held_now = claims(kube).await?;
        let nodes = kube.cluster::<Node>().list().await?.items;
        let names: HashSet<String> = nodes.iter().map(node::name).collect();
        // In a cluster whose controller manager allocates podCIDRs, a Node without one is a Node it has not
        // reached yet (it joined a moment ago). Allocating here would give it a second, conflicting subnet.
        if let Some(other) =
            nodes.iter().find(|n| node::name(n) != my_name && matches!(node::pod_cidrs(n), Ok((Some(_), _))))
        {
            return Err(StoreError::Unavailable(format!(
                "Node {my_name} has no podCIDR yet while Node {} has one: waiting for kube-controller-manager \
                 to allocate it (weft allocates subnets itself only when no Node has a podCIDR)",
                node::name(other)
            )));
        }
        let mut taken = HashSet::new();
        for n in nodes.iter().filter(|n| node::name(n) != my_name) {
            // Subnets the controller manager handed out, and any weft published, are not free.
            if let Ok((Some(c), _)) = node::pod_cidrs(n) {
                taken.insert(c);
            }
            if let Some(Ok(s)) = n.metadata.annotations.as_ref().and_then(|a| a.get(SUBNET)).map(|s| s.parse()) {
                taken.insert(s);
            }
        }
        let mut own = None;
        for c in held_now {
            if c.holder == my_name {
                if own.is_none() || Some(c.subnet) == published {
                    own = Some(c.subnet);
                }
            } else if !names.contains(&c.holder) {
                match kube.system::<Claim>().delete_at(&c.name, c.rv.clone()).await {
                    Ok(()) => tracing::info!(claim = %c.name, holder = %c.holder, "freed the subnet of a deleted node"),
                    Err(e) if e.code() == Some(404) => {}
                    Err(e) if e.code() == Some(409) => {
                        taken.insert(c.subnet);
                    }
                    // deploy/weft.yaml's admission policy lets an agent release only its own claims: the garbage
                    // collector removes this one (its ownerReference names the deleted Node). Until then it stays taken.
                    Err(e) if e.code() == Some(403) => {
                        tracing::warn!(claim = %c.name, holder = %c.holder, error = %e,
                            "may not free the subnet of a deleted node (admission policy or RBAC); it stays taken \
                             until the garbage collector removes the claim");
                        taken.insert(c.subnet);
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                taken.insert(c.subnet);
            }
        }
        match plan(cfg, own, published.or(hint), &taken, rand::random()) {
            Plan::Keep(s) => return Ok(s),
            Plan::Take(s) => match kube.system::<Claim>().create(&new_claim(s, me)).await {
                Ok(_) => return Ok(s),
                Err(e) if e.code() == Some(409) => {
                    tracing::debug!(subnet = %s, attempt, "subnet claimed by another node meanwhile; choosing again");
                }
                Err(e) => return Err(e.into()),
            },
            Plan::Exhausted => return Err(StoreError::Exhausted(cfg.cluster_cidr.to_string())),
        }
    }
    Err(StoreError::Other(format!(
        "no subnet claimed for {my_name} after {ATTEMPTS} attempts: every choice was taken by another node meanwhile"
    )))
}

/// Deletes `node`'s claims except the one on `keep`. Deleting a claim that is already gone succeeds.
pub(crate) async fn drop_claims(kube: &Kube, node: &str, keep: Option<Ipv4Net>) -> Result<(), StoreError> {
    for c in claims(kube).await?.into_iter().filter(|c| c.holder == node && Some(c.subnet) != keep) {
        match kube.system::<Claim>().delete_at(&c.name, c.rv).await {
            Ok(()) => {}
            Err(e) if matches!(e.code(), Some(404 | 409)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_named_by_subnet_and_point_at_their_node() {
        assert_eq!(claim_name("10.244.3.0/24".parse().unwrap()), "subnet-10-244-3-0-24");
        let n: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "n1", "uid": "u-1"}})).unwrap();
        let c = new_claim("10.244.3.0/24".parse().unwrap(), &n);
        let h = held(&c).expect("a weft claim");
        assert_eq!((h.holder.as_str(), h.subnet.to_string().as_str()), ("n1", "10.244.3.0/24"));
        assert_eq!(c.metadata.owner_references.as_ref().unwrap()[0].uid, "u-1");
        let mut foreign = c.clone();
        foreign.metadata.labels = None;
        assert!(held(&foreign).is_none(), "other Leases in the namespace are not claims");
    }
}
