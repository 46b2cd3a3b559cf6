#!/usr/bin/env bash
# Every public function has a page, and every page matches the headers
# (in the spirit of curl's test1139).  Usage: doc_pages.sh SOURCE_DIR [BINARY_DIR]
#
# Fails (exit 1, listing each problem) when:
#  - a function declared `H2T_EXTERN ... h2t_xxx(...)` in include/h2trace/*.h
#    (or version.h.in; declarations may span lines) has no doc/api/h2t_xxx.md,
#    or an h2t_ prototype lacks H2T_EXTERN;
#  - a page lacks a section (NAME SYNOPSIS DESCRIPTION EXAMPLE SEE ALSO, plus
#    RETURN VALUE for functions) or its NAME line is not "<page name> - ...";
#  - a page's SYNOPSIS includes a header that exists in the tree, and the
#    function or type it documents is no longer declared there (stale page),
#    its prototype differs from the header's (whitespace aside), or a member
#    of the struct it documents is not named on the page;
#  - errors.md misses an H2T_ERR_ code, a trace page misses a hook, a config
#    struct users fill has no page, README.md does not link a page, or a
#    link between doc pages is broken;
#  - an EXAMPLE (or a complete example of guide.md / design.md) does not
#    compile (-fsyntax-only -Wall -Wextra -Werror) against the tree's headers.
# Pages whose SYNOPSIS names a header not in the tree yet are counted as
# pending and not checked against it (other branches land headers later).
set -u
src=${1:?usage: doc_pages.sh SOURCE_DIR [BINARY_DIR]}
src=$(cd "$src" && pwd)
api=$src/doc/api
[ -d "$api" ] || { echo "FAIL: no $api"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# version.h is generated; a stand-in lets examples that include it compile
# without a configured build tree.
mkdir -p "$tmp/inc/h2trace"
if [ -f "$src/include/h2trace/version.h.in" ]; then
  sed -e 's/@PROJECT_VERSION@/0.0.0/' -e 's/@PROJECT_VERSION_[A-Z]*@/0/' \
    "$src/include/h2trace/version.h.in" >"$tmp/inc/h2trace/version.h"
fi

# The checks that need parsing; writes the pages whose examples to compile
# to $tmp/examples (one "page<TAB>file" a line).
perl -e '
use strict; use warnings;
my ($src, $tmp) = @ARGV;
my $inc = "$src/include/h2trace";
my $api = "$src/doc/api";
my @fail;

sub slurp { my $f = shift; open(my $h, "<", $f) or return undef; local $/; my $s = <$h>; close $h; $s }
sub squash { my $s = shift; $s =~ s/\s+//g; $s }

# Headers in the tree: name as included ("client.h") => text without
# comments and preprocessor lines.
my (%hdr, %raw);
opendir(my $d, $inc) or die "no $inc\n";
for my $f (sort readdir $d) {
  next unless $f =~ /^(\w+\.h)(\.in)?$/;
  my $name = $1;
  my $t = slurp("$inc/$f");
  $raw{$name} = $t;
  $t =~ s{/\*.*?\*/}{ }gs;
  $t =~ s{//[^\n]*}{}g;
  $t =~ s{^[ \t]*#(?:[^\n]*\\\n)*[^\n]*}{}gm;
  $hdr{$name} = $t;
}
closedir $d;

# Public functions: name => [header, prototype without H2T_EXTERN].
my %fn;
for my $h (sort keys %hdr) {
  while ($hdr{$h} =~ /\bH2T_EXTERN\s+([^;{}]*?\(.*?\))\s*;/gs) {
    my $p = $1;
    my ($name) = $p =~ /(\w+)\s*\(/ or next;
    $p =~ s/\s+/ /g;
    push @fail, "$name declared twice ($fn{$name}[0], $h)" if $fn{$name};
    $fn{$name} = [$h, "$p;"];
  }
}
# A prototype in a public header without H2T_EXTERN is not exported (hidden
# visibility) and would escape this check.
for my $h (sort keys %hdr) {
  for my $st (split /;/, $hdr{$h}) {
    next if $st =~ /\btypedef\b|\bH2T_EXTERN\b/;
    push @fail, "$h: $1() is declared without H2T_EXTERN" if $st =~ /\b(h2t_\w+)\s*\(/;
  }
}
# Public types: name => header.
my %type;
for my $h (sort keys %hdr) {
  my $t = $hdr{$h};
  $type{$1} = $h while $t =~ /\}\s*(h2t_\w+)\s*;/g;
  $type{$1} = $h while $t =~ /typedef\b[^;{}]*?\b(h2t_\w+)\s*;/g;
  $type{$1} = $h while $t =~ /typedef\b[^;{}]*?\(\s*\*\s*(h2t_\w+)\s*\)/g;
}

my @missing = grep { !-f "$api/$_.md" } sort keys %fn;
push @fail, map { "no page for $_ ($fn{$_}[0]): write doc/api/$_.md" } @missing;

opendir($d, $api) or die;
my @pages = sort grep { /\.md$/ && $_ ne "README.md" } readdir $d;
closedir $d;

my ($nfn_pages, $ntype_pages, $npending) = (0, 0, 0);
my %sections;
open(my $ex, ">", "$tmp/examples") or die;
for my $file (@pages) {
  (my $page = $file) =~ s/\.md$//;
  my $t = slurp("$api/$file");
  my %sec;
  my $cur;
  for my $line (split /\n/, $t) {
    if ($line =~ /^# ([A-Z][A-Z ]+?)\s*$/) { $cur = $1; $sec{$cur} = ""; next; }
    $sec{$cur} .= "$line\n" if defined $cur;
  }
  # Relative links between doc pages must resolve.
  while ($t =~ /\]\(([^)#:\s]+\.md)(?:#[^)]*)?\)/g) {
    push @fail, "$file: broken link to $1" unless -f "$api/$1";
  }
  my $syn = $sec{SYNOPSIS} // "";
  my $is_fn = $fn{$page} || $syn =~ /\b\Q$page\E\s*\(/;
  my @need = ("NAME", "SYNOPSIS", "DESCRIPTION", "EXAMPLE",
              $is_fn ? ("RETURN VALUE") : (), "SEE ALSO");
  for my $s (@need) {
    push @fail, "$file: no \"# $s\" section" unless exists $sec{$s} && $sec{$s} =~ /\S/;
  }
  push @fail, "$file: NAME must read \"$page - what it does\""
    unless ($sec{NAME} // "") =~ /^\s*\Q$page\E - \S/;
  my @incs = $syn =~ /#include\s*<h2trace\/(\w+\.h)>/g;
  if (!@incs) { push @fail, "$file: SYNOPSIS has no #include <h2trace/...>"; next; }
  my $h = $incs[-1];
  if (!exists $hdr{$h}) { $npending++; next; }   # header not in this tree yet
  if ($page eq "errors") {
    # not a symbol page: its codes are checked below
  } elsif ($is_fn) {
    $nfn_pages++;
    if (!$fn{$page}) {
      push @fail, "$file: stale: $page is not declared in any header";
    } else {
      push @fail, "$file: SYNOPSIS includes <h2trace/$h> but $page is declared in $fn{$page}[0]"
        if $fn{$page}[0] ne $h && $raw{$h} !~ /#include\s*<h2trace\/\Q$fn{$page}[0]\E>/;
      push @fail, "$file: SYNOPSIS prototype differs from the header:\n    header: $fn{$page}[1]"
        if index(squash($syn), squash($fn{$page}[1])) < 0;
    }
  } else {
    $ntype_pages++;
    if (($type{$page} // "") ne $h) {
      push @fail, "$file: stale: type $page is not defined in <h2trace/$h>";
    } elsif ($hdr{$h} =~ /typedef\s+struct\s+\Q$page\E\s*(\{(?:[^{}]++|(?1))*\})\s*\Q$page\E\s*;/) {
      # Every member (nested ones too) is named somewhere on the page.
      my $body = $1;
      my %seen;
      while ($body =~ /\b([a-z_]\w*)\s*(?:\[[^\]]*\])?\s*[;,]/g) {
        next if $seen{$1}++;
        push @fail, "$file: member $1 of $page is not documented" unless $t =~ /\b\Q$1\E\b/;
      }
    }
  }
  if (($sec{EXAMPLE} // "") =~ /```c\n(.*?)```/s) {
    open(my $o, ">", "$tmp/$page.c") or die;
    print $o $1;
    close $o;
    print $ex "$file\t$tmp/$page.c\n";
  } else {
    push @fail, "$file: EXAMPLE has no ```c block";
  }
}
# Full examples (starting with #include) in the guide and the design too,
# when every h2trace header they include is in the tree.
for my $doc (qw(guide design)) {
  my $t = slurp("$src/doc/$doc.md") // next;
  while ($t =~ /\]\(([^)#:\s]+\.md)(?:#[^)]*)?\)/g) {
    push @fail, "$doc.md: broken link to $1" unless -f "$src/doc/$1";
  }
  my $i = 0;
  while ($t =~ /```c\n(#include.*?)```/sg) {
    my $code = $1;
    $i++;
    next if grep { !exists $hdr{$_} } $code =~ /#include\s*<h2trace\/(\w+\.h)>/g;
    open(my $o, ">", "$tmp/$doc-$i.c") or die;
    print $o $code;
    close $o;
    print $ex "$doc.md (example $i)\t$tmp/$doc-$i.c\n";
  }
}
close $ex;

# The types users fill each have a page once their header is in the tree.
for my $ty (qw(h2t_client_config h2t_request_opts h2t_client_trace
               h2t_server_trace h2t_event h2t_server_config h2t_listen_opts
               h2t_inflight_config h2t_diag_config h2t_export_config)) {
  push @fail, "no page for type $ty ($type{$ty})" if $type{$ty} && !-f "$api/$ty.md";
}

# errors.md: every code of H2T_ERRNO_MAP.
if (defined $raw{"common.h"}) {
  my $e = slurp("$api/errors.md") // "";
  push @fail, "no doc/api/errors.md" unless length $e;
  for my $c ($raw{"common.h"} =~ /XX\((\w+),\s*-\d+/g) {
    push @fail, "errors.md: H2T_ERR_$c is not documented" unless $e =~ /\bH2T_ERR_$c\b/;
  }
}

# Trace pages: every hook of H2T_EVENT_MAP, by side, as a "## name" heading.
if (defined $raw{"trace.h"}) {
  while ($raw{"trace.h"} =~ /XX\((\w+),\s*(\w+)\)/g) {
    my ($up, $low) = ($1, $2);
    my $p = $up =~ /^SRV_/ ? "h2t_server_trace" : "h2t_client_trace";
    my $txt = slurp("$api/$p.md") // next;
    push @fail, "$p.md: hook $low has no \"## $low\" section" unless $txt =~ /^##+ `?\Q$low\E\b/m;
  }
}

# README.md links every page.
my $idx = slurp("$api/README.md");
if (!defined $idx) { push @fail, "no doc/api/README.md (the index)"; }
else {
  while ($idx =~ /\]\(([^)#:\s]+\.md)(?:#[^)]*)?\)/g) {
    push @fail, "README.md: broken link to $1" unless -f "$api/$1";
  }
  for my $file (@pages) {
    push @fail, "README.md does not link $file" unless $idx =~ /\]\(\Q$file\E\)/;
  }
}

open(my $o, ">", "$tmp/summary") or die;
printf $o "doc pages: %d functions, %d documented; %d type pages; %d pages pending (header not in tree)\n",
  scalar(keys %fn), scalar(keys %fn) - scalar(@missing), $ntype_pages, $npending;
close $o;
open($o, ">", "$tmp/fail") or die;
print $o "FAIL: $_\n" for @fail;
close $o;
' "$src" "$tmp" || { echo "FAIL: doc_pages.sh parser error"; exit 1; }

# Examples compile against the headers in this tree.
cc=${CC:-cc}
nex=0
if command -v "$cc" >/dev/null 2>&1; then
  while IFS=$'\t' read -r page file; do
    nex=$((nex + 1))
    if ! out=$("$cc" -std=gnu11 -fsyntax-only -Wall -Wextra -Werror -Wno-unused-parameter \
        -I"$tmp/inc" -I"$src/include" "$file" 2>&1); then
      { echo "FAIL: $page: EXAMPLE does not compile:"; echo "$out" | head -20; } >>"$tmp/fail"
    fi
  done <"$tmp/examples"
else
  echo "note: no C compiler ($cc): examples not compiled"
fi

if [ -s "$tmp/fail" ]; then
  cat "$tmp/fail"
  cat "$tmp/summary"
  exit 1
fi
echo "$(cat "$tmp/summary"); $nex examples compile"
exit 0
