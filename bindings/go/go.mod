module anyfork

go 1.19
