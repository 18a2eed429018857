//! Four-letter words (FourLetterCommands.java): admin commands sent as the first four bytes of
//! a connection instead of a handshake.

/// A known four-letter word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FourLetterWord {
    /// `conf`: server configuration.
    Conf,
    /// `cons`: connection details.
    Cons,
    /// `crst`: reset connection/server statistics.
    Crst,
    /// `dirs`: data directory sizes.
    Dirs,
    /// `dump`: sessions and ephemerals.
    Dump,
    /// `envi`: environment.
    Envi,
    /// `gtmk`: trace mask (get).
    Gtmk,
    /// `ruok`: liveness check.
    Ruok,
    /// `stmk`: trace mask (set).
    Stmk,
    /// `srvr`: server summary.
    Srvr,
    /// `srst`: reset server statistics.
    Srst,
    /// `stat`: summary plus connections.
    Stat,
    /// `wchc`: watches by connection.
    Wchc,
    /// `wchp`: watches by path.
    Wchp,
    /// `wchs`: watch summary.
    Wchs,
    /// `mntr`: monitoring key/values.
    Mntr,
    /// `isro`: read-only mode check.
    Isro,
    /// `hash`: tree digest history.
    Hash,
}

impl FourLetterWord {
    /// Every word.
    pub const ALL: &'static [FourLetterWord] = &[
        FourLetterWord::Conf,
        FourLetterWord::Cons,
        FourLetterWord::Crst,
        FourLetterWord::Dirs,
        FourLetterWord::Dump,
        FourLetterWord::Envi,
        FourLetterWord::Gtmk,
        FourLetterWord::Ruok,
        FourLetterWord::Stmk,
        FourLetterWord::Srvr,
        FourLetterWord::Srst,
        FourLetterWord::Stat,
        FourLetterWord::Wchc,
        FourLetterWord::Wchp,
        FourLetterWord::Wchs,
        FourLetterWord::Mntr,
        FourLetterWord::Isro,
        FourLetterWord::Hash,
    ];

    /// The four bytes on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FourLetterWord::Conf => "conf",
            FourLetterWord::Cons => "cons",
            FourLetterWord::Crst => "crst",
            FourLetterWord::Dirs => "dirs",
            FourLetterWord::Dump => "dump",
            FourLetterWord::Envi => "envi",
            FourLetterWord::Gtmk => "gtmk",
            FourLetterWord::Ruok => "ruok",
            FourLetterWord::Stmk => "stmk",
            FourLetterWord::Srvr => "srvr",
            FourLetterWord::Srst => "srst",
            FourLetterWord::Stat => "stat",
            FourLetterWord::Wchc => "wchc",
            FourLetterWord::Wchp => "wchp",
            FourLetterWord::Wchs => "wchs",
            FourLetterWord::Mntr => "mntr",
            FourLetterWord::Isro => "isro",
            FourLetterWord::Hash => "hash",
        }
    }

    /// The word these bytes spell, if any.
    pub fn parse(word: &[u8]) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|w| w.as_str().as_bytes() == word)
    }
}

impl std::fmt::Display for FourLetterWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
