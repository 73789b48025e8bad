//! Exec, Attach and PortForward: validate the request and hand back a URL of
//! the streaming server, where the client then speaks the stream itself.

use k8s_cri::v1 as cri;

use super::{Error, Services};
use crate::stream;

fn invalid(field: &'static str, message: &str) -> Error {
    Error::InvalidArgument {
        field,
        message: message.to_string(),
    }
}

/// The checks kubelet's own streaming server makes: a tty merges stderr into
/// stdout, so both cannot be asked for, and a session needs some stream.
fn check_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), Error> {
    if tty && stderr {
        return Err(invalid("stderr", "tty and stderr cannot both be true"));
    }
    if !stdin && !stdout && !stderr {
        return Err(invalid(
            "stdin",
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    Ok(())
}

pub(super) async fn exec(s: &Services, req: cri::ExecRequest) -> Result<cri::ExecResponse, Error> {
    if req.container_id.is_empty() {
        return Err(invalid("container_id", "must not be empty"));
    }
    if req.cmd.is_empty() || req.cmd[0].is_empty() {
        return Err(invalid("cmd", "must name a command"));
    }
    check_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
    let url = s
        .stream
        .exec_url(stream::ExecRequest {
            container_id: req.container_id,
            cmd: req.cmd,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        })
        .await?;
    Ok(cri::ExecResponse { url })
}

pub(super) async fn attach(
    s: &Services,
    req: cri::AttachRequest,
) -> Result<cri::AttachResponse, Error> {
    if req.container_id.is_empty() {
        return Err(invalid("container_id", "must not be empty"));
    }
    check_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
    let url = s
        .stream
        .attach_url(stream::AttachRequest {
            container_id: req.container_id,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        })
        .await?;
    Ok(cri::AttachResponse { url })
}

pub(super) async fn port_forward(
    s: &Services,
    req: cri::PortForwardRequest,
) -> Result<cri::PortForwardResponse, Error> {
    if req.pod_sandbox_id.is_empty() {
        return Err(invalid("pod_sandbox_id", "must not be empty"));
    }
    let ports = req
        .port
        .iter()
        .map(|p| {
            u16::try_from(*p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid("port", &format!("{p} is not a port number (1-65535)")))
        })
        .collect::<Result<Vec<u16>, Error>>()?;
    let url = s
        .stream
        .port_forward_url(stream::PortForwardRequest {
            pod_id: req.pod_sandbox_id,
            ports,
        })
        .await?;
    Ok(cri::PortForwardResponse { url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_errors_keep_their_codes() {
        use crate::stream::{BackendError, StreamError};
        use tonic::{Code, Status};
        for (err, code) in [
            (
                StreamError::Backend(BackendError::ContainerNotFound("c".into())),
                Code::NotFound,
            ),
            (
                StreamError::Backend(BackendError::PodNotFound("p".into())),
                Code::NotFound,
            ),
            (
                StreamError::Backend(BackendError::ContainerNotRunning("c".into())),
                Code::FailedPrecondition,
            ),
            (StreamError::TooManyPending(1000), Code::ResourceExhausted),
        ] {
            assert_eq!(Status::from(Error::from(err)).code(), code);
        }
    }

    #[test]
    fn stream_combinations() {
        assert!(check_streams(false, false, true, true).is_ok());
        assert!(check_streams(true, true, true, false).is_ok());
        assert!(check_streams(true, false, true, true).is_err());
        assert!(check_streams(false, false, false, false).is_err());
    }
}
