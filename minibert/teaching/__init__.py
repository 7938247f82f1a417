"""Teaching: explain, the view page, plots, the article's errata, verify."""
