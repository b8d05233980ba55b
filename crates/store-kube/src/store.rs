//! [`KubeStore`]: the [`Store`] trait on the Kubernetes API. The mapping is in the crate docs; this file is
//! the trait's methods, each a few API calls through [`Calls`](crate::calls).
use crate::alloc;
use crate::calls::{Calls, Kube, Object, SYSTEM_NAMESPACE};
use crate::claimed;
use crate::error::KubeError;
use crate::network::{self, Network};
use crate::node::{self, Source};
use crate::objects::AsObject;
use crate::rv::RvMap;
use crate::url::KubeUrl;
use crate::watch::{self, Convert, Seed};
use async_trait::async_trait;
use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::Lease as Claim;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_store::{
    LeaseEntry, Object as StoreObject, ObjectEntry, ObjectKind, Revision, Snapshot, Store, StoreError, WatchEvent,
    WatchStream,
};
use weft_types::tenant::NetworkNodeStatus;
use weft_types::{Lease, LeaseRequest, NetworkConfig};

/// The ConfigMap in `weft-system` holding the cluster network config, and its key.
pub const CONFIG_MAP: &str = "weft-config";
pub const CONFIG_KEY: &str = "network.json";
/// How often a renewal that changes nothing still refreshes `weft.dev/renewed-at`: as often as the kubelet
/// reports an unchanged node status by default, so weft adds no more Node churn than the kubelet does.
pub const REFRESH: Duration = Duration::from_secs(300);
const READ_ONLY: &str = "read-only in Kubernetes mode: the API server is the source of truth";

/// How many network-status snapshots a store remembers to seed watches from (a consumer watches right after
/// it lists, so the last few suffice).
const STATUS_SEEDS: usize = 8;
/// Same for lease lists (each remembers every Node's lease and every claim, so fewer).
const LEASE_SEEDS: usize = 4;

pub struct KubeStore {
    kube: Kube,
    rv: RvMap,
    /// The last network-status lists' revisions and what they showed (see `watch_network_statuses`).
    status_seeds: Mutex<VecDeque<(Revision, Seed)>>,
    /// The last lease lists' revisions and the Nodes and claims they were judged with (see `watch_entries`).
    lease_seeds: Mutex<VecDeque<(Revision, Arc<claimed::View>)>>,
}

impl KubeStore {
    /// Connects to the API server a `kube://` or `kube+http://HOST:PORT` URL names. No request is made: an API
    /// server that is down now shows up as `Unavailable` on the first call, which callers retry.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut config = match url.parse::<KubeUrl>()? {
            KubeUrl::Infer => kube::Config::infer().await.map_err(|e| {
                StoreError::Other(format!(
                    "no Kubernetes client config: neither the in-cluster service account (KUBERNETES_SERVICE_HOST, \
                     /var/run/secrets/kubernetes.io/serviceaccount) nor KUBECONFIG worked: {e}"
                ))
            })?,
            KubeUrl::Plain(http) => {
                let uri = http.parse().map_err(|e| StoreError::Other(format!("store URL {url:?}: {e}")))?;
                kube::Config::new(uri)
            }
        };
        // A watch on a connection that died without a FIN (a partition, a vanished load balancer) would wait
        // forever. API servers send a bookmark about every minute, so 150 s of silence means the connection is
        // gone: the read fails, the watch ends, and we watch again from the last resourceVersion.
        config.read_timeout = Some(Duration::from_secs(150));
        let api_url = config.cluster_url.to_string();
        let client = kube::Client::try_from(config)
            .map_err(|e| StoreError::Other(format!("Kubernetes client for {api_url}: {e}")))?;
        Ok(Self::from_client(client, &api_url))
    }

    /// A store on an existing client; `api_url` is only for error messages.
    pub fn from_client(client: kube::Client, api_url: &str) -> Self {
        let kube = Kube { client, url: api_url.trim_end_matches('/').into(), op_timeout: Duration::from_secs(10) };
        Self { kube, rv: RvMap::default(), status_seeds: Mutex::default(), lease_seeds: Mutex::default() }
    }

    /// Every Network, and the revision of the list. A missing CRD is reported as such.
    async fn networks(&self) -> Result<(Vec<Network>, Revision), StoreError> {
        let list = self.kube.cluster::<Network>().list().await.map_err(crd_missing)?;
        let revision = self.rv.to_revision(list.metadata.resource_version.as_deref().unwrap_or("0"));
        Ok((list.items, revision))
    }

    async fn network_statuses(&self) -> Result<Snapshot<StoreObject>, StoreError> {
        let (nets, revision) = self.networks().await?;
        let mut items: Vec<StoreObject> = nets.iter().flat_map(Network::statuses).collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let mut seeds = self.status_seeds.lock().unwrap_or_else(|p| p.into_inner());
        seeds.retain(|(r, _)| *r != revision);
        seeds.push_back((revision, status_seed(&nets)));
        while seeds.len() > STATUS_SEEDS {
            seeds.pop_front();
        }
        Ok(Snapshot { items, revision })
    }

    /// A watch of network statuses from `after`: from nothing (0: every object comes as ADDED), or from the
    /// snapshot this store listed at `after`. Any other revision gets `Reset` at once: the consumer relists
    /// here, and its next watch starts from a known snapshot.
    async fn watch_network_statuses(&self, after: Revision) -> Result<WatchStream<StoreObject>, StoreError> {
        let seed = if after == 0 {
            Some(Seed::new())
        } else {
            let seeds = self.status_seeds.lock().unwrap_or_else(|p| p.into_inner());
            seeds.iter().find(|(r, _)| *r == after).map(|(_, s)| s.clone())
        };
        match seed {
            Some(seed) => self.watch_kind(after, status_convert(), seed).await,
            None => Ok(Box::pin(futures::stream::iter([Ok(WatchEvent::Reset)]))),
        }
    }

    /// Publishes (Some) or removes (None) one node's status of one network: a merge patch of
    /// `status.nodes.<node>` on the Network's status subresource, which touches no other node's entry.
    async fn patch_network_status(
        &self,
        key: &str,
        status: Option<&NetworkNodeStatus>,
    ) -> Result<Revision, StoreError> {
        let (net, node) = network::split_status_key(key).map_err(StoreError::Other)?;
        let patch = network::status_patch(node, status);
        match self.kube.cluster::<Network>().merge_patch_status(net, &patch).await {
            Ok(n) => Ok(self.rv.to_revision(n.metadata.resource_version.as_deref().unwrap_or("0"))),
            Err(e) if e.code() == Some(404) && status.is_none() => Ok(0),
            Err(e) if e.code() == Some(404) => {
                Err(StoreError::Other(format!("network {net} does not exist (no Network {net} in the API): {e}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every Node's lease entry, each weft-allocated subnet judged against its claim; the view is remembered so
    /// that a watch from this revision starts from it.
    async fn entries(&self) -> Result<Snapshot<LeaseEntry>, StoreError> {
        let (view, rv) = claimed::list(&self.kube).await?;
        let revision = self.rv.to_revision(rv.as_deref().unwrap_or("0"));
        let items = view.entries();
        let mut seeds = self.lease_seeds.lock().unwrap_or_else(|p| p.into_inner());
        seeds.retain(|(r, _)| *r != revision);
        seeds.push_back((revision, Arc::new(view)));
        while seeds.len() > LEASE_SEEDS {
            seeds.pop_front();
        }
        Ok(Snapshot { items, revision })
    }

    /// A watch of lease entries from `after`: from nothing (0), or from the view this store listed at `after`
    /// (the Nodes and claims it judged with). Any other revision gets `Reset` at once, and the consumer relists.
    async fn watch_entries(&self, after: Revision) -> Result<WatchStream<LeaseEntry>, StoreError> {
        let view = if after == 0 {
            let claims = self.kube.system::<Claim>().list().await?;
            Some(claimed::View {
                claims: alloc::Claims::new(claims.items.iter().filter_map(alloc::held)),
                claims_rv: claims.metadata.resource_version.unwrap_or_default(),
                ..claimed::View::default()
            })
        } else {
            let seeds = self.lease_seeds.lock().unwrap_or_else(|p| p.into_inner());
            seeds.iter().find(|(r, _)| *r == after).map(|(_, v)| (**v).clone())
        };
        let Some(view) = view else { return Ok(Box::pin(futures::stream::iter([Ok(WatchEvent::Reset)]))) };
        let nodes = Convert::One(Box::new(|n: &Node| (node::name(n), Some(claimed::NodeView::of(n)))));
        let nodes = self.watch_kind(after, nodes, Seed::new()).await?;
        let claims = Convert::One(Box::new(|c: &Claim| (c.metadata.name.clone().unwrap_or_default(), alloc::held(c))));
        let claims = self.watch_calls(self.kube.system::<Claim>(), view.claims_rv.clone(), claims, Seed::new()).await?;
        Ok(claimed::merge(self.kube.clone(), view, nodes, claims))
    }

    async fn node(&self, name: &str) -> Result<Option<Node>, StoreError> {
        Ok(self.kube.cluster::<Node>().get(name).await?)
    }

    async fn list_objects<K: Object + AsObject>(&self) -> Result<Snapshot<StoreObject>, StoreError> {
        let list = self.kube.cluster::<K>().list().await?;
        let mut items: Vec<StoreObject> = list.items.iter().filter_map(|o| Some((o.key(), o.value()?))).collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let revision = self.rv.to_revision(list.metadata.resource_version.as_deref().unwrap_or("0"));
        Ok(Snapshot { items, revision })
    }

    async fn watch_kind<K: Object, T: serde::Serialize + Send + 'static>(
        &self,
        after: Revision,
        convert: Convert<K, T>,
        seed: Seed,
    ) -> Result<WatchStream<T>, StoreError> {
        self.watch_calls(self.kube.cluster::<K>(), self.rv.to_resource_version(after), convert, seed).await
    }

    async fn watch_calls<K: Object, T: serde::Serialize + Send + 'static>(
        &self,
        calls: Calls<K>,
        rv: String,
        convert: Convert<K, T>,
        seed: Seed,
    ) -> Result<WatchStream<T>, StoreError> {
        match calls.watch(&rv).await {
            Ok(first) => Ok(watch::spawn(calls, rv, first, convert, seed)),
            // Some servers refuse a too-old resourceVersion up front instead of in the stream.
            Err(e) if e.code() == Some(410) => Ok(Box::pin(futures::stream::iter([Ok(WatchEvent::Reset)]))),
            Err(e) if K::group(&()) == network::GROUP => Err(crd_missing(e)),
            Err(e) => Err(e.into()),
        }
    }
}

fn object_convert<K: AsObject + Send + Sync + 'static>() -> Convert<K, StoreObject> {
    Convert::One(Box::new(|o: &K| {
        let key = o.key();
        let value = o.value().map(|v| (key.clone(), v));
        (key, value)
    }))
}

fn status_convert() -> Convert<Network, StoreObject> {
    Convert::Many(Box::new(|n: &Network| n.statuses().into_iter().map(|(k, v)| (k.clone(), (k, v))).collect()))
}

/// What a list of network statuses showed, per Network: the seed of a watch from that list's revision.
fn status_seed(networks: &[Network]) -> Seed {
    networks
        .iter()
        .map(|n| (watch::object_id(n), n.statuses().iter().map(|e| (e.0.clone(), watch::digest(e))).collect()))
        .collect()
}

/// A missing CRD is a 404 on the collection: say what to apply.
fn crd_missing(e: KubeError) -> StoreError {
    if e.code() == Some(404) {
        StoreError::Other(format!(
            "the CustomResourceDefinition networks.weft.dev is not installed (apply deploy/weft.yaml): {e}"
        ))
    } else {
        e.into()
    }
}

fn parse_config(cm: &ConfigMap) -> Result<NetworkConfig, StoreError> {
    let at = format!("ConfigMap {SYSTEM_NAMESPACE}/{CONFIG_MAP} key {CONFIG_KEY}");
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .ok_or_else(|| StoreError::Corrupt(format!("{at} is missing")))?;
    let cfg: NetworkConfig = serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{at}: {e}")))?;
    cfg.validate().map_err(|e| StoreError::Corrupt(format!("{at}: {e}")))?;
    Ok(cfg)
}

/// A podCIDR the controller manager gave must be one of the cluster's node subnets, or routes go astray.
fn check_pod_cidr(cfg: &NetworkConfig, node: &str, s: Ipv4Net) -> Result<(), StoreError> {
    if !cfg.cluster_cidr.contains(&s) {
        return Err(StoreError::Other(format!(
            "Node {node} podCIDR {s} is outside clusterCidr {} (network.json in ConfigMap {SYSTEM_NAMESPACE}/\
             {CONFIG_MAP} must match kube-controller-manager --cluster-cidr)",
            cfg.cluster_cidr
        )));
    }
    if s.prefix_len() != cfg.subnet_len {
        return Err(StoreError::Other(format!(
            "Node {node} podCIDR {s} is a /{} but subnetLen is {} (network.json must match \
             kube-controller-manager --node-cidr-mask-size)",
            s.prefix_len(),
            cfg.subnet_len
        )));
    }
    Ok(())
}

#[async_trait]
impl Store for KubeStore {
    async fn network_config(&self) -> Result<NetworkConfig, StoreError> {
        match self.kube.system::<ConfigMap>().get(CONFIG_MAP).await? {
            Some(cm) => parse_config(&cm),
            None => Err(StoreError::NoNetworkConfig),
        }
    }

    async fn init_network_config(&self, cfg: &NetworkConfig) -> Result<NetworkConfig, StoreError> {
        if let Some(cm) = self.kube.system::<ConfigMap>().get(CONFIG_MAP).await? {
            return parse_config(&cm);
        }
        let json = serde_json::to_string_pretty(cfg).map_err(|e| StoreError::Other(e.to_string()))?;
        let cm = ConfigMap {
            metadata: ObjectMeta { name: Some(CONFIG_MAP.into()), ..ObjectMeta::default() },
            data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), json)])),
            ..ConfigMap::default()
        };
        match self.kube.system::<ConfigMap>().create(&cm).await {
            Ok(created) => parse_config(&created),
            // Another agent was first: its config wins.
            Err(e) if e.code() == Some(409) => self.network_config().await,
            Err(e) if e.code() == Some(404) => Err(StoreError::Other(format!(
                "namespace {SYSTEM_NAMESPACE} does not exist: apply deploy/weft.yaml, which creates it ({e})"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn acquire(&self, req: &LeaseRequest) -> Result<Lease, StoreError> {
        let cfg = self.network_config().await?;
        let me = self.node(&req.node).await?.ok_or_else(|| {
            StoreError::Other(format!(
                "Node {:?} does not exist in the Kubernetes API: the node name (--node-name, WEFT_NODE_NAME) must \
                 be the Kubernetes node name (the DaemonSet passes spec.nodeName)",
                req.node
            ))
        })?;
        let (cidr4, cidr6) = node::pod_cidrs(&me).map_err(StoreError::Other)?;
        let (subnet, source) = match cidr4 {
            Some(s) => {
                check_pod_cidr(&cfg, &req.node, s)?;
                alloc::drop_claims(&self.kube, &req.node, None).await?;
                (s, Source::PodCidr)
            }
            None => {
                let s = alloc::allocate(&self.kube, &cfg, &me, req.hint).await?;
                alloc::drop_claims(&self.kube, &req.node, Some(s)).await?;
                (s, Source::Weft)
            }
        };
        if let (Some(c6), Some(s6)) = (cfg.cluster_cidr6, cidr6) {
            if !c6.contains(&s6) {
                return Err(StoreError::Other(format!("Node {} podCIDR {s6} is outside clusterCidr6 {c6}", req.node)));
            }
        }
        let subnet6 = cidr6.or_else(|| cfg.index_of(subnet).and_then(|i| cfg.subnet6(i)));
        let now = node::now_ms();
        let lease = Lease {
            node: req.node.clone(),
            subnet,
            subnet6,
            node_ip: req.node_ip,
            backend_data: req.backend_data.clone(),
            expires_at_ms: now + req.ttl.as_millis() as u64,
        };
        self.kube.cluster::<Node>().merge_patch(&req.node, &node::publish_patch(&lease, source, now)).await?;
        Ok(lease)
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let lost = || StoreError::LeaseLost(lease.node.clone());
        let n = self.kube.cluster::<Node>().get_cached(&lease.node).await?.ok_or_else(lost)?;
        let cur = match node::lease_of(&n) {
            Ok(Some(cur)) if cur.subnet == lease.subnet => cur,
            _ => return Err(lost()),
        };
        // A weft-allocated subnet is this node's only while its claim names it: peers refuse it otherwise, so
        // a claim that went (deleted by hand) is a lost lease, and acquiring again claims the subnet anew.
        if matches!(node::pod_cidrs(&n), Ok((None, _))) {
            let claim = self.kube.system::<Claim>().get_cached(&alloc::claim_name(lease.subnet)).await?;
            if claim.as_ref().and_then(alloc::held).is_none_or(|h| h.holder != lease.node || h.subnet != lease.subnet) {
                return Err(lost());
            }
        }
        // Nodes do not expire, so a renewal writes only when there is news: changed attributes, or a
        // renewed-at older than REFRESH. Each write is a Node event for every agent in the cluster.
        let now = node::now_ms();
        let unchanged =
            cur.node_ip == lease.node_ip && cur.subnet6 == lease.subnet6 && cur.backend_data == lease.backend_data;
        if unchanged && node::renewed_at(&n).is_some_and(|t| now.saturating_sub(t) < REFRESH.as_millis() as u64) {
            return Ok(cur);
        }
        let source =
            if node::pod_cidrs(&n).map_err(StoreError::Other)?.0.is_some() { Source::PodCidr } else { Source::Weft };
        let next = Lease { expires_at_ms: now + ttl.as_millis() as u64, ..lease.clone() };
        match self.kube.cluster::<Node>().merge_patch(&lease.node, &node::publish_patch(&next, source, now)).await {
            Ok(_) => Ok(next),
            Err(e) if e.code() == Some(404) => Err(lost()),
            Err(e) => Err(e.into()),
        }
    }

    async fn release(&self, node_name: &str) -> Result<(), StoreError> {
        if let Some(n) = self.node(node_name).await? {
            if node::has_weft_annotations(&n) {
                match self.kube.cluster::<Node>().merge_patch(node_name, &node::release_patch()).await {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(404) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        alloc::drop_claims(&self.kube, node_name, None).await
    }

    async fn leases(&self) -> Result<Snapshot<Lease>, StoreError> {
        let snap = self.entries().await?;
        let mut items = Vec::new();
        for e in snap.items {
            match e.lease {
                Ok(l) => items.push(l),
                // One malformed or unbacked Node must not hide every other peer.
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a Node whose weft lease is malformed or not backed by its claim")
                }
            }
        }
        Ok(Snapshot { items, revision: snap.revision })
    }

    async fn watch_leases(&self, after: Revision) -> Result<WatchStream<Lease>, StoreError> {
        // A lease watch shows good leases only: a refused entry is a Delete, if the consumer had the lease.
        let mut had: std::collections::HashSet<String> = match after {
            0 => Default::default(),
            _ => {
                let seeds = self.lease_seeds.lock().unwrap_or_else(|p| p.into_inner());
                let view = seeds.iter().find(|(r, _)| *r == after).map(|(_, v)| v.clone());
                view.map(|v| v.entries().into_iter().filter(|e| e.lease.is_ok()).map(|e| e.key).collect())
                    .unwrap_or_default()
            }
        };
        let entries = self.watch_entries(after).await?;
        let leases = entries.filter_map(move |ev| {
            let out = match ev {
                Ok(WatchEvent::Put(e)) => match e.lease {
                    Ok(l) => {
                        had.insert(e.key);
                        Some(Ok(WatchEvent::Put(l)))
                    }
                    Err(why) => {
                        tracing::warn!(error = %why, "ignoring a Node whose weft lease is malformed or not backed by its claim");
                        had.remove(&e.key).then_some(Ok(WatchEvent::Delete(e.key)))
                    }
                },
                Ok(WatchEvent::Delete(k)) => had.remove(&k).then_some(Ok(WatchEvent::Delete(k))),
                Ok(WatchEvent::Reset) => Some(Ok(WatchEvent::Reset)),
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(out)
        });
        Ok(Box::pin(leases))
    }

    async fn lease_entries(&self) -> Result<Snapshot<LeaseEntry>, StoreError> {
        self.entries().await
    }

    async fn watch_lease_entries(&self, after: Revision) -> Result<WatchStream<LeaseEntry>, StoreError> {
        self.watch_entries(after).await
    }

    /// Only a node's network status is written through the store; everything else is read-only here.
    async fn put_object(&self, kind: ObjectKind, key: &str, value: &serde_json::Value) -> Result<Revision, StoreError> {
        match kind {
            ObjectKind::NetworkStatus => {
                let status: NetworkNodeStatus = serde_json::from_value(value.clone())
                    .map_err(|e| StoreError::Other(format!("network status {key}: {e}")))?;
                self.patch_network_status(key, Some(&status)).await
            }
            _ => Err(StoreError::Other(READ_ONLY.into())),
        }
    }

    async fn delete_object(&self, kind: ObjectKind, key: &str) -> Result<(), StoreError> {
        match kind {
            ObjectKind::NetworkStatus => self.patch_network_status(key, None).await.map(|_| ()),
            _ => Err(StoreError::Other(READ_ONLY.into())),
        }
    }

    async fn objects(&self, kind: ObjectKind) -> Result<Snapshot<StoreObject>, StoreError> {
        match kind {
            ObjectKind::Endpoint => self.list_objects::<Pod>().await,
            ObjectKind::Namespace => self.list_objects::<Namespace>().await,
            ObjectKind::Policy => self.list_objects::<NetworkPolicy>().await,
            ObjectKind::Network => {
                let (nets, revision) = self.networks().await?;
                let mut items: Vec<StoreObject> = nets.iter().filter_map(|n| Some((n.key(), n.value()?))).collect();
                items.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(Snapshot { items, revision })
            }
            ObjectKind::NetworkStatus => self.network_statuses().await,
        }
    }

    async fn watch_objects(&self, kind: ObjectKind, after: Revision) -> Result<WatchStream<StoreObject>, StoreError> {
        match kind {
            ObjectKind::Endpoint => self.watch_kind(after, object_convert::<Pod>(), Seed::new()).await,
            ObjectKind::Namespace => self.watch_kind(after, object_convert::<Namespace>(), Seed::new()).await,
            ObjectKind::Policy => self.watch_kind(after, object_convert::<NetworkPolicy>(), Seed::new()).await,
            ObjectKind::Network => self.watch_kind(after, object_convert::<Network>(), Seed::new()).await,
            ObjectKind::NetworkStatus => self.watch_network_statuses(after).await,
        }
    }

    /// Networks in the order the API server created them (`metadata.creationTimestamp`, then name); the other
    /// kinds by key, as the trait's default.
    async fn object_entries(&self, kind: ObjectKind) -> Result<Snapshot<ObjectEntry>, StoreError> {
        if kind != ObjectKind::Network {
            let snap = self.objects(kind).await?;
            return Ok(Snapshot {
                items: snap.items.into_iter().map(ObjectEntry::by_key).collect(),
                revision: snap.revision,
            });
        }
        let (nets, revision) = self.networks().await?;
        let mut items: Vec<ObjectEntry> = nets.iter().filter_map(network::entry_of).collect();
        items.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Snapshot { items, revision })
    }

    async fn watch_object_entries(
        &self,
        kind: ObjectKind,
        after: Revision,
    ) -> Result<WatchStream<ObjectEntry>, StoreError> {
        if kind != ObjectKind::Network {
            use futures::StreamExt;
            let s = self.watch_objects(kind, after).await?;
            return Ok(s
                .map(|ev| {
                    ev.map(|ev| match ev {
                        WatchEvent::Put(o) => WatchEvent::Put(ObjectEntry::by_key(o)),
                        WatchEvent::Delete(k) => WatchEvent::Delete(k),
                        WatchEvent::Reset => WatchEvent::Reset,
                    })
                })
                .boxed());
        }
        let convert = Convert::One(Box::new(|n: &Network| (n.key(), network::entry_of(n))));
        self.watch_kind(after, convert, Seed::new()).await
    }
}
