//! Sendmail: `STARTTLS=server|client` lines joined by pid and queue id to `from=`/`to=` lines.
