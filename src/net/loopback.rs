//! `lo` up in a pod's network namespace, in-process.
//!
//! kubelet's runtimes either exec the `loopback` CNI plugin or set the flag
//! over netlink. The exec costs a Go process start (~3 ms, more on a busy
//! node) per pod; one netlink request costs microseconds. The netlink
//! messages come from `netlink-packet-route` (the rust-netlink project's
//! typed rtnetlink messages, used by `rtnetlink` itself) and go over
//! `netlink-sys`'s blocking socket, so no message layout is written by hand.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::NetError;

/// The loopback device's index in every network namespace (the kernel's
/// `LOOPBACK_IFINDEX`).
const LOOPBACK_IFINDEX: u32 = 1;

/// Sets `lo` up in the namespace `netns` (a bind-mounted ns file). setns(2)
/// moves only the calling thread, so the work runs on a fresh thread that
/// ends right after: never on a pooled tokio thread, which would stay in
/// the pod's namespace.
pub(crate) async fn up(netns: &Path) -> Result<(), NetError> {
    let path = netns.to_path_buf();
    let err = |source| NetError::Loopback {
        netns: netns.to_path_buf(),
        source,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("yonggi-netns-lo".to_string())
        .spawn(move || {
            let _ = tx.send(up_in_thread(&path));
        })
        .map_err(err)?;
    match rx.await {
        Ok(result) => result.map_err(err),
        Err(_) => Err(err(std::io::Error::other("loopback thread panicked"))),
    }
}

fn up_in_thread(path: &PathBuf) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(std::io::Error::from)?;
    drop(file);
    // Created after setns: a netlink socket talks to the namespace it was
    // created in.
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;

    let mut link = LinkMessage::default();
    link.header.index = LOOPBACK_IFINDEX;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    let mut message = NetlinkMessage::from(RouteNetlinkMessage::SetLink(link));
    message.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    message.header.sequence_number = 1;
    message.finalize();
    let mut out = vec![0; message.buffer_len()];
    message.serialize(&mut out);
    socket.send(&out, 0)?;

    let mut reply = Vec::with_capacity(4096);
    socket.recv(&mut reply, 0)?;
    let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| std::io::Error::other(format!("unreadable netlink answer: {e}")))?;
    match answer.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
        NetlinkPayload::Error(_) => Ok(()),
        other => Err(std::io::Error::other(format!(
            "unexpected netlink answer {other:?}"
        ))),
    }
}
