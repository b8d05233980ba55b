//! STATUS (CNI 1.1): ready when the pod subnet is known — from the config (standalone) or from the node file
//! the agent writes. Until the agent has written it, the answer is 50 "plugin not available", so runtimes
//! hold back ADDs instead of failing them.
use super::Ctx;
use crate::config::NetConf;
use crate::error::CniError;
use crate::plan::Subnets;
use weft_dataplane::pod::PodNet;

pub fn status<P: PodNet>(ctx: &Ctx<P>, conf: &NetConf) -> Result<(), CniError> {
    match Subnets::resolve(conf, ctx.load_node_file) {
        Ok(_) => Ok(()),
        Err(CniError::TryAgainLater(m) | CniError::Io(m)) => Err(CniError::NotAvailable(m)),
        Err(other) => Err(other),
    }
}
