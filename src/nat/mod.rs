//! NAT: rules and actions, address sets, and the choice of outside
//! addresses and ports. Pure: time is passed in.

pub mod addr;
pub mod alloc;
pub mod rule;
pub mod sets;

pub use addr::{AddrPool, IfAddr, PortRange, Prefix};
pub use alloc::{AllocError, EimMapping, NatState, PortUsage, Source, SrcRequest, nat_flags};
pub use rule::{Action, DstNat, IfId, Match, Meta, Rule, RuleDisplay, Ruleset, SnatSpec, SrcNat};
pub use sets::{AddrSet, SetEntry, Sets};
