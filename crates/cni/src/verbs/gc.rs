//! GC (CNI 1.1): release every reservation (in the default pool and every tenant network's pool) and delete
//! every host veth of *this network* whose attachment is not in `cni.dev/valid-attachments`. Strays are
//! recognised by name (see `names`), so even a veth whose ADD was SIGKILLed before anything else was recorded
//! is found. Deletion is best effort: everything is tried, the first error is reported.
//!
//! Damaged reservation records (unreadable content) are reported one line each on stderr, which runtimes
//! put in their logs (a GC success has no stdout): the ones a valid attachment still holds are kept, the others
//! released.
use super::Ctx;
use crate::config::{Attachment, NetConf};
use crate::error::CniError;
use crate::ipam::{GcReport, IpamStore};
use crate::names;
use crate::tenant::tenant_pool_dirs;
use std::collections::HashSet;
use std::path::Path;
use weft_dataplane::pod::PodNet;

pub fn gc<P: PodNet>(ctx: &Ctx<P>, conf: &NetConf, valid: &[Attachment]) -> Result<(), CniError> {
    let mut first_err: Option<CniError> = None;
    let keep: HashSet<(String, String)> = valid.iter().map(|a| (a.container_id.clone(), a.ifname.clone())).collect();
    // The default pool and every tenant network's pool: a valid attachment is kept wherever its addresses are.
    let dirs = std::iter::once(conf.data_dir.clone()).chain(tenant_pool_dirs(&conf.data_dir));
    for dir in dirs {
        if let Some(store) = IpamStore::open_existing(&dir).map(|s| s.with_sync(conf.fsync)) {
            match store.gc(&keep) {
                Ok(report) => (ctx.log)(&damage_report(store.dir(), &report)),
                Err(e) => {
                    first_err.get_or_insert(e.into());
                }
            }
        }
    }
    let keep: HashSet<String> =
        valid.iter().map(|a| names::host_veth(&conf.name, &a.container_id, &a.ifname)).collect();
    let prefix = names::veth_prefix(&conf.name);
    for name in ctx.pod.links_with_prefix(&prefix)? {
        let ours = name.len() == 15 && name[prefix.len()..].bytes().all(|b| b.is_ascii_hexdigit());
        if ours && !keep.contains(&name) {
            if let Err(e) = ctx.pod.delete(&name) {
                first_err.get_or_insert(e.into());
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// One log line per damaged record (empty when there is none).
fn damage_report(dir: &Path, report: &GcReport) -> Vec<String> {
    report
        .damaged
        .iter()
        .map(|d| match &d.kept_for {
            Some((cid, ifname)) => format!(
                "weft GC: reservation {} in {} has an unreadable record; kept: valid attachment {cid}/{ifname} holds it",
                d.ip,
                dir.display()
            ),
            None => format!(
                "weft GC: reservation {} in {} has an unreadable record and no valid attachment holds it: released",
                d.ip,
                dir.display()
            ),
        })
        .collect()
}
