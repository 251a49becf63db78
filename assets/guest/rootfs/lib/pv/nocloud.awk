# The subset of #cloud-config the peervisor guest applies (busybox awk; no YAML
# library in the guest). Reads a NoCloud user-data file; writes into $OUT:
#   hostname        from `hostname:` (or `fqdn:`, up to its first dot)
#   bootcmd.sh      `bootcmd:` items, run before the network is up
#   runcmd.sh       `runcmd:` items, run once the services listen
# and applies at once:
#   ssh_authorized_keys:  appended to $KEYS (the init: /root/.ssh/authorized_keys)
#   write_files:          path, content (plain, quoted, | or > block),
#                         encoding (b64), permissions, append
# A runcmd/bootcmd item is a string (a shell line), a flow list
# ([httpd, -p, '8080']: each element quoted as one argument) or a | block.
# Everything else (users, packages, nested block lists, anchors) is ignored:
# the same seed boots a real cloud image, whose cloud-init applies it all.

function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }

# A scalar as YAML writes it: 'single', "double" (\n \t \" \\), or plain (a
# " #" starts a comment).
function scalar(s,   out, i, c) {
	s = trim(s)
	if (s ~ /^'.*'$/) {
		s = substr(s, 2, length(s) - 2)
		gsub(/''/, "'", s)
		return s
	}
	if (s ~ /^".*"$/) {
		s = substr(s, 2, length(s) - 2)
		out = ""
		for (i = 1; i <= length(s); i++) {
			c = substr(s, i, 1)
			if (c == "\\" && i < length(s)) {
				i++
				c = substr(s, i, 1)
				if (c == "n") c = "\n"
				else if (c == "t") c = "\t"
			}
			out = out c
		}
		return out
	}
	sub(/[ \t]+#.*$/, "", s)
	return s
}

# One shell word: '...' with embedded quotes closed, escaped and reopened.
function shq(s,   out, i, c) {
	out = "'"
	for (i = 1; i <= length(s); i++) {
		c = substr(s, i, 1)
		out = out (c == "'" ? "'\"'\"'" : c)
	}
	return out "'"
}

# [a, 'b c', "d"] -> 'a' 'b c' 'd'
function flow(s,   out, i, c, cur, q) {
	s = substr(trim(s), 2)
	sub(/\][ \t]*$/, "", s)
	out = ""; cur = ""; q = ""
	for (i = 1; i <= length(s); i++) {
		c = substr(s, i, 1)
		if (q != "") {
			cur = cur c
			if (c == q) q = ""
		} else if (c == "'" || c == "\"") {
			q = c; cur = cur c
		} else if (c == ",") {
			out = out " " shq(scalar(cur)); cur = ""
		} else cur = cur c
	}
	if (trim(cur) != "") out = out " " shq(scalar(cur))
	return substr(out, 2)
}

function indent_of(line) { match(line, /^ */); return RLENGTH }

function command(item) {
	if (item ~ /^\[/) return flow(item)
	return scalar(item)
}

function emit(key, text) {
	if (key == "runcmd" || key == "bootcmd") print text >> (OUT "/" key ".sh")
	else if (key == "ssh_authorized_keys") print text >> KEYS
}

function begin_block(style, owner, target) {
	blk = style; bowner = owner; btarget = target; bind = -1; nb = 0
}

# The block scalar's text: | keeps lines, > folds them; a final newline unless
# |- or >-.
function end_block(   text, i, sep) {
	while (nb > 0 && bl[nb] == "") nb--
	text = ""
	for (i = 1; i <= nb; i++) {
		if (blk ~ /^>/)
			sep = (bl[i] == "") ? "\n" : ((i == 1 || bl[i - 1] == "") ? "" : " ")
		else
			sep = (i == 1) ? "" : "\n"
		text = text sep bl[i]
	}
	if (blk !~ /-$/) text = text "\n"
	if (btarget == "content") wf["content"] = text
	else emit(sec, text)
	blk = ""
}

function flush_file(   path, dir, tmp) {
	path = wf["path"]
	if (path == "") return
	dir = path
	sub(/\/[^\/]*$/, "", dir)
	if (dir != "") system("mkdir -p " shq(dir))
	tmp = OUT "/write_file"
	printf "%s", wf["content"] > tmp
	close(tmp)
	if (wf["encoding"] ~ /^(b64|base64)$/) system("base64 -d " tmp " > " tmp ".d && mv " tmp ".d " tmp)
	system("cat " tmp (wf["append"] == "true" ? " >> " : " > ") shq(path) "; rm -f " tmp)
	if (wf["permissions"] != "") system("chmod " shq(wf["permissions"]) " " shq(path))
	print "peervisor-guest: cloud-init wrote " path
	split("", wf)
}

# `key: value` inside a write_files item.
function field(text, ind,   k, v) {
	k = text; sub(/:.*/, "", k); k = trim(k)
	v = text; if (!sub(/^[^:]*:/, "", v)) v = ""
	v = trim(v)
	if (v ~ /^[|>][-+]?$/) begin_block(v, ind, "content")
	else wf[k] = scalar(v)
}

function line_of(text,   ind, item, key, v) {
	if (text ~ /^[ \t]*(#|$)/) return
	ind = indent_of(text)
	if (ind == 0) {
		flush_file()
		key = text; sub(/:.*/, "", key); sec = trim(key)
		v = text; if (!sub(/^[^:]*:/, "", v)) v = ""
		v = scalar(v)
		if (sec == "hostname") hostname = v
		else if (sec == "fqdn" && hostname == "") { hostname = v; sub(/\..*/, "", hostname) }
		return
	}
	if (text ~ /^ *- /) {
		item = text; sub(/^ *- +/, "", item); item = trim(item)
		if (sec == "write_files") {
			flush_file()
			field(item, ind)
		} else if (item ~ /^[|>][-+]?$/) begin_block(item, ind, "item")
		else if (sec == "ssh_authorized_keys") emit(sec, scalar(item))
		else emit(sec, command(item))
		return
	}
	if (sec == "write_files") field(trim(text), ind)
}

BEGIN { OUT = ENVIRON["OUT"]; KEYS = ENVIRON["KEYS"]; blk = ""; sec = ""; hostname = ""; split("", wf) }
NR == 1 { next }
{
	sub(/\r$/, "")
	if (blk != "") {
		if ($0 ~ /^[ \t]*$/) { bl[++nb] = ""; next }
		if (indent_of($0) > bowner) {
			if (bind < 0) bind = indent_of($0)
			bl[++nb] = substr($0, bind + 1)
			next
		}
		end_block()
	}
	line_of($0)
}
END {
	if (blk != "") end_block()
	flush_file()
	if (hostname != "") print hostname > (OUT "/hostname")
}
