//! Exim: `<=` and `=>` lines with `P=esmtps`, `X=` and `CV=`, TLS errors and `XXXXXXXA` syntax errors.
