package io.ferromq.tests; public class Scenarios { public static void main(String[] a) {} }
