//! One process the agent runs for the host (a container's init or an exec): its pid, its
//! stdio ends until a stream takes them, and its exit, observable by any number of waiters.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::reaper::Exit;

/// The agent's ends of a process's stdio.
#[derive(Debug, Default)]
pub struct Ends {
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    /// The pty master with a terminal: stdin and stdout streams both use it.
    pub terminal: Option<File>,
}

#[derive(Debug)]
pub struct Proc {
    pub pid: i32,
    pub ends: Mutex<Ends>,
    /// The socket of an attached stdin stream, so CloseStdin can end it (its copy thread then
    /// drops the pipe and the process reads EOF).
    pub stdin_stream: Mutex<Option<OwnedFd>>,
    exit_tx: watch::Sender<Option<Exit>>,
}

impl Proc {
    pub fn new(pid: i32, ends: Ends) -> Self {
        Self {
            pid,
            ends: Mutex::new(ends),
            stdin_stream: Mutex::new(None),
            exit_tx: watch::channel(None).0,
        }
    }

    pub fn exited(&self, exit: Exit) {
        self.exit_tx.send_replace(Some(exit));
    }

    pub fn exit(&self) -> Option<Exit> {
        *self.exit_tx.borrow()
    }

    /// Resolves when the process has exited, at once if it already has.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit_tx.subscribe();
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives as long as the Proc");
        exit.expect("wait_for checked is_some")
    }

    /// Ends stdin: closes an attached stdin stream, or drops the pipe if none attached.
    pub fn close_stdin(&self) {
        if let Some(sock) = self.stdin_stream.lock().expect("lock").take() {
            super::streams::shutdown_both(&sock);
        }
        let mut ends = self.ends.lock().expect("lock");
        ends.stdin = None;
    }
}
