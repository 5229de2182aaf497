//! The `sluice` CNI plugin, installed as `/opt/cni/bin/sluice`, and a
//! libcni-equivalent caller ([`libcni`]) for tests and labs.
//!
//! The container runtime calls the plugin once per pod operation (CNI
//! 0.3.0 to 1.1.0: ADD, DEL, CHECK, GC, STATUS, VERSION). ADD gives the pod
//! an address ([`ipam`]: the plugin's own allocator, or an IPAM plugin such
//! as `host-local`), creates its veth pair ([`link`]), records the
//! attachment ([`records`]) and asks `sluiced` to serve the host end over
//! AF_XDP with the pod's IP and MAC bound. In vhost-user mode ([`vhost`])
//! there is no veth: the pod (a DPDK app) serves a vhost-user socket in its
//! volume and sluiced's DPDK backend connects to it. `sluiced` reads the records when
//! it starts, so pods survive its restart without a call from the runtime.
//!
//! Module map: [`conf`] (the plugin's config keys), [`error`] (codes),
//! [`plugin`] (the commands, each a function of a [`plugin::Call`]).
//!
//! Protocol types, environment parsing, version negotiation and result
//! layouts come from `rscni-plugin`. `docs/cni.md` is the operator's guide.

pub mod conf;
pub mod error;
pub mod ipam;
pub mod libcni;
pub mod link;
pub mod plugin;
pub mod records;
pub mod vhost;
