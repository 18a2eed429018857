//! Four-letter words (FourLetterCommands.java): admin commands sent as the first four bytes of
//! a connection instead of a handshake.

/// A known four-letter word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FourLetterWord {
    Conf,
    Cons,
    Crst,
    Dirs,
    Dump,
    Envi,
    Gtmk,
    Ruok,
    Stmk,
    Srvr,
    Srst,
    Stat,
    Wchc,
    Wchp,
    Wchs,
    Mntr,
    Isro,
    Hash,
}

impl FourLetterWord {
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
