#!/usr/bin/perl
# An allocation-heavy, deterministic Perl workload for the integration tests: hashes, arrays,
# strings and regular expressions over ~10^5 items. Prints one line per phase and a checksum
# that depends only on this code (hash keys are always visited sorted), so a run under
# LD_PRELOAD of StarMalloc must print exactly what a plain run prints.
#
# With --prove-starmalloc=<library path>, also checks on stderr that the library is mapped
# into this very process (/proc/self/maps); exit status 3 if it is not.
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);

my $digest = Digest::MD5->new;
sub record {
    my ($name, $value) = @_;
    my $line = "$name: $value";
    $digest->add($line);
    print "$line\n";
}

for my $arg (@ARGV) {
    next unless $arg =~ /^--prove-starmalloc=(.+)$/;
    my $lib = $1;
    open(my $maps, '<', '/proc/self/maps') or die "cannot read /proc/self/maps: $!\n";
    my @hits = grep { index($_, $lib) >= 0 } <$maps>;
    close $maps;
    if (!@hits) {
        print STDERR "prove-starmalloc: $lib is not mapped in perl (pid $$)\n";
        exit 3;
    }
    print STDERR "prove-starmalloc: $lib mapped in perl (", scalar(@hits), " mappings)\n";
}

# A small deterministic generator (no dependence on perl's rand implementation).
my $state = 12345;
sub next_rand { $state = ($state * 1103515245 + 12345) % 2147483648; return $state; }

# Hashes: insert, update, delete, nested structures.
my %h;
for my $i (1 .. 100_000) {
    my $k = sprintf("k%06d-%x", $i, next_rand());
    $h{$k} = { n => $i, s => "v" x ($i % 17), a => [ ($i) x ($i % 4) ] };
}
my $deleted = 0;
for my $k (sort keys %h) {
    if ($h{$k}{n} % 3 == 0) { delete $h{$k}; $deleted++; }
}
my ($sum, $len) = (0, 0);
for my $k (sort keys %h) {
    $sum += $h{$k}{n};
    $len += length($h{$k}{s}) + scalar(@{ $h{$k}{a} });
}
record("hashes", scalar(keys %h) . " keys, $deleted deleted, sum $sum, len $len");

# Arrays: push/splice/sort/reverse/map/grep.
my @a = map { next_rand() % 1_000_000 } 1 .. 100_000;
splice(@a, 1000, 5000, (7) x 10_000);
my @sorted = sort { $a <=> $b } @a;
my @strs = sort map { "s" . ($_ * 7 % 10007) } @a[0 .. 50_000];
my @evens = grep { $_ % 2 == 0 } reverse @sorted;
record("arrays", scalar(@a) . " items, min $sorted[0], max $sorted[-1], median $sorted[@sorted / 2], "
       . scalar(@evens) . " evens, first str $strs[0], last str $strs[-1]");

# Strings: growth, substr, join/split, sprintf, case mapping.
my $text = '';
for my $i (1 .. 100_000) {
    $text .= sprintf("%05d:%s;", $i, ($i % 11 == 0 ? "eleven" : "word$i"));
}
my @fields = split /;/, $text;
my $upper = uc $text;
substr($upper, 1000, 5000) = lc substr($upper, 1000, 5000);
my $joined = join('|', reverse @fields[0 .. 9999]);
record("strings", length($text) . " chars, " . scalar(@fields) . " fields, " . md5_hex($upper)
       . ", joined " . length($joined));

# Regular expressions: matching, captures, global substitution, tr.
my $count = () = $text =~ /eleven/g;
my %by_digit;
while ($text =~ /(\d{5}):word(\d+)(\d);/g) { $by_digit{$3}++; }
(my $subst = $text) =~ s/word(\d+)/W<$1>/g;
(my $tr = $subst) =~ tr/0-9/a-j/;
my @caps = ($text =~ /(\d{3})00:/g);
record("regex", "$count elevens, digits " . join(',', map { "$_=$by_digit{$_}" } sort keys %by_digit)
       . ", subst " . length($subst) . ", tr " . md5_hex($tr) . ", " . scalar(@caps) . " captures");

print "checksum: ", $digest->hexdigest, "\n";
