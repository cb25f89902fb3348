"""The tables in README and docs/, generated from outputs/ and checked: `squeezestudy report`."""
